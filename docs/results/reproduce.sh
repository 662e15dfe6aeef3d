#!/usr/bin/env bash
# Makes everything in docs/results/ on this machine's CPU, on the real
# CIFAR-10 (the JPEG archive of ../shared/data, unpacked and converted outside
# the repository; nothing made from it is written here but measured figures).
#
#   docs/results/reproduce.sh [--archive PATH] [--quick]
#
#   1. cifar10-32/      b3 sweep: MobileNetV3-Large, Adam 5e-4, 45,000 /
#                       5,000 / 10,000 split, 32x32, batch sizes 100 ... 513,
#                       1 epoch per run, 3 interleaved repeats, test accuracy
#                       in eval mode and after BatchNorm recalibration
#   2. throughput-224/  b3 sweep at 224x224: 30 steps per run, batch sizes
#                       15, 16, 17, 31, 32, 33, 3 interleaved repeats
#   3. why/             b3 profile (127/128/129, 511/512/513), b3 gemm (M, N,
#                       K around multiples of 8, 16, 64), b3 layout (batch 127)
#   4. pytorch-32/      experiment/pytorch_b3.py, PyTorch on the same data and
#                       settings at batch 128, one run (accuracy and speed)
#   machine.txt         the CPU, the commit, the date, every command
#
# About 25 minutes on a 2-core machine (part 1 15, part 2 4, part 3 2,
# part 4 3); --quick runs every command on a sliver of the data and
# few steps (a few minutes) to check the script, writing to /tmp instead.
# Keep the machine otherwise idle while it runs: the figures are timings.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
archive="$root/../shared/data/cifar10-jpg.tar.gz"
quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    --archive) archive="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    *) echo "reproduce.sh: unknown argument '$1' (use --archive PATH, --quick)" >&2; exit 2 ;;
  esac
done
[ -f "$archive" ] || { echo "reproduce.sh: no archive at $archive (pass --archive PATH)" >&2; exit 2; }

b3="${B3:-$root/build/b3}"   # B3=path/to/b3 to use another build
if [ ! -x "$b3" ]; then
  echo "reproduce.sh: building b3 first (make build)"
  make -C "$root" build >/dev/null
fi

out="$root/docs/results"
[ "$quick" = 1 ] && out="$(mktemp -d /tmp/b3-results-quick-XXXXXX)"
work="${TMPDIR:-/tmp}/b3-cifar10-real"   # outside the repository
mkdir -p "$out" "$work"

# The JPEG folders unpacked and converted to CIFAR-10 binary files once.
if [ ! -f "$work/bin/test_batch.bin" ]; then
  echo "reproduce.sh: unpacking $archive into $work"
  rm -rf "$work/jpg" "$work/bin"
  mkdir -p "$work/jpg"
  tar xzf "$archive" -C "$work/jpg"
  "$b3" data convert --from "$work/jpg" --to "$work/bin"
fi
data="$work/bin"

log="$out/machine.txt"
{
  echo "b3 results on this CPU, made by docs/results/reproduce.sh$([ "$quick" = 1 ] && echo " --quick")"
  echo "date (UTC): $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git -C "$root" rev-parse HEAD)$(git -C "$root" diff --quiet HEAD -- . ':!docs/results' || echo ' (with uncommitted changes)')"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores available"
  echo "flags: $(grep -m1 -o -w -E 'avx512f|avx512_bf16|amx_tile|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "memory: $(grep MemTotal /proc/meminfo | awk '{print int($2/1048576)" GiB"}')"
  echo "b3: $b3 (built by $(c++ --version | head -1))"
  echo "data: $archive (real CIFAR-10 re-encoded as JPEG), converted into $data"
  echo
  echo "commands:"
} >"$log"

run() {  # prints, logs and runs one command with its wall time
  echo "+ $*" | tee -a "$log"
  local start=$SECONDS
  "$@"
  echo "  ($(( SECONDS - start )) s)" | tee -a "$log"
}

export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
if [ "$quick" = 1 ]; then
  small=(--train-limit 2000 --validation-size 500 --test-limit 2000)
  sizes=100,127,128
  run "$b3" sweep --device cpu --data "$data" --image-size 32 --batch-sizes "$sizes" --repeats 2 \
    --epochs 1 "${small[@]}" --bn-recalibrate 20 --out "$out/cifar10-32"
  run "$b3" sweep --device cpu --data synthetic --image-size 224 --batch-sizes 15,16 --repeats 2 \
    --steps 2 --warmup-steps 1 --no-test --no-validation --out "$out/throughput-224"
  run "$b3" profile --device cpu --image-size 32 --batch-sizes 127,128 --repeats 1 --out "$out/why/profile"
  run "$b3" gemm --device cpu --sizes 127-129 --repeats 1 --min-seconds 0.01 --out "$out/why/gemm-mnk"
  run "$b3" layout --device cpu --image-size 32 --batch-size 128 --steps 1 --repeats 1 --out "$out/why/layout"
  echo "reproduce.sh --quick: everything ran; output in $out"
  exit 0
fi

# 1. The reference's benchmark at 32x32 on the real data, whole epochs.
run "$b3" sweep --device cpu --data "$data" --image-size 32 \
  --batch-sizes 100,127,128,129,156,255,256,257,511,512,513 --repeats 3 --epochs 1 \
  --validation-size 5000 --train-limit 0 --test-limit 0 --bn-recalibrate 20 --warmup-steps 5 \
  --out "$out/cifar10-32"
# 2. Throughput at 224x224 (an epoch would take hours on a CPU): 30 steps per run.
run "$b3" sweep --device cpu --data "$data" --image-size 224 --batch-sizes 15,16,17,31,32,33 \
  --repeats 3 --steps 30 --warmup-steps 3 --no-test --no-validation --out "$out/throughput-224"
# 3. Why: per-layer times, GEMM shapes, memory layouts.
run "$b3" profile --device cpu --image-size 32 --batch-sizes 127,128,129,511,512,513 --repeats 5 \
  --out "$out/why/profile"
run "$b3" gemm --device cpu --sizes 120-136,248-264,504-520 --vary mnk --out "$out/why/gemm-mnk"
run "$b3" gemm --device cpu --sizes 120-136 --vary k --fixed 1024 --out "$out/why/gemm-k"
run "$b3" gemm --device cpu --sizes 120-136 --vary n --fixed 1024 --out "$out/why/gemm-n"
run "$b3" layout --device cpu --image-size 32 --batch-size 127 --out "$out/why/layout"
# 4. PyTorch on the same data and settings, batch 128, one run: its accuracies
#    (eval mode and recalibrated) and its speed beside b3's.
#    PyTorch runs under TCMalloc (experiment/pytorch_allocator.sh says why).
# shellcheck source=experiment/pytorch_allocator.sh
source "$root/experiment/pytorch_allocator.sh"
if /usr/bin/python3 -c "import torch, torchvision" 2>/dev/null; then
  preload="$(pytorch_preload "${TORCH_ALLOCATOR:-tcmalloc}")"
  echo "PyTorch's malloc: ${TORCH_ALLOCATOR:-tcmalloc} (LD_PRELOAD=$preload)" | tee -a "$log"
  run env LD_PRELOAD="$preload" /usr/bin/python3 "$root/experiment/pytorch_b3.py" --device cpu --data "$data" --image-size 32 \
    --batch-sizes 128 --repeats 1 --epochs 1 --validation-size 5000 --train-limit 0 --test-limit 0 \
    --bn-recalibrate 20 --threads "$OMP_NUM_THREADS" --warmup-steps 2 --out "$out/pytorch-32"
else
  echo "reproduce.sh: /usr/bin/python3 has no torch; part 4 (PyTorch beside b3) skipped" | tee -a "$log"
fi
echo "reproduce.sh: done; see $out"
