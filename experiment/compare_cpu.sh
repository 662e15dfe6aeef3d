#!/usr/bin/env bash
# b3 vs PyTorch on this CPU: one MobileNetV3-Large training step (forward,
# cross-entropy, backward, SGD), f32, at 32x32 batch 128 and 224x224 batch 16,
# then inference (the evaluation-mode forward alone: b3 bench-infer, PyTorch
# model.eval() under torch.inference_mode()) at batch 256, 32x32 and 224x224,
# each run ALTERNATELY (PyTorch, b3, PyTorch, b3, ...) so that load and clock drift
# hit both alike. Prints, per configuration, the median over rounds of each
# run's median img/s, the ratio b3 / PyTorch's fastest configuration (layout
# and malloc, PyTorch under TCMalloc by default), and the step memory per
# image (peak RSS minus the RSS before the first step, per image).
#
#   experiment/compare_cpu.sh [build-dir]         (default: build)
# Environment:
#   ROUNDS=3          alternating rounds per size
#   THREADS=2         threads for both (OpenMP / torch.set_num_threads)
#   SIZES="32:128 224:16"   image:batch pairs for training
#   INFER_SIZES="32:256 224:256"   image:batch pairs for inference ("" skips it)
#   B3_FORMATS="nhwc"       TORCH_FORMATS="nhwc nchw"
#   TORCH_ALLOCATORS="tcmalloc"   malloc for PyTorch's runs, each a configuration
#     of its own: tcmalloc, jemalloc, glibc (none preloaded); see
#     experiment/pytorch_allocator.sh for why glibc's alone is not a fair baseline.
#     b3 runs as built, with glibc's malloc and its own block pool.
#   WARMUP=2 STEPS=5  (32x32);  224x224 uses WARMUP_224=1 STEPS_224=4
#   inference: WARMUP_INFER=1 STEPS_INFER=5 forwards
#   PYTHON=/usr/bin/python3  (needs torch and torchvision)
#   OMP_WAIT_POLICY is passed through to both (PyTorch's Debian build and b3
#   both use libgomp); it is printed with the results.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
build="${1:-$root/build}"
b3="$build/b3"
python="${PYTHON:-/usr/bin/python3}"
rounds="${ROUNDS:-3}"
threads="${THREADS:-2}"
sizes="${SIZES-32:128 224:16}"
infer_sizes="${INFER_SIZES-32:256 224:256}"
b3_formats="${B3_FORMATS:-nhwc}"
torch_formats="${TORCH_FORMATS:-nhwc nchw}"
torch_allocators="${TORCH_ALLOCATORS:-tcmalloc}"
# shellcheck source=experiment/pytorch_allocator.sh
source "$here/pytorch_allocator.sh"
declare -A torch_preload
for allocator in $torch_allocators; do
  torch_preload[$allocator]="$(pytorch_preload "$allocator")" || {
    echo "compare_cpu.sh: TORCH_ALLOCATORS: see above" >&2
    exit 1
  }
done

if [[ ! -x "$b3" ]]; then
  echo "compare_cpu.sh: $b3 not found; build first (cmake --build $build --target b3)" >&2
  exit 1
fi
if ! "$python" -c "import torch, torchvision" 2>/dev/null; then
  echo "compare_cpu.sh: $python cannot import torch and torchvision" >&2
  exit 1
fi

results="$(mktemp)"
trap 'rm -f "$results"' EXIT

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "threads $threads, rounds $rounds, f32, mobilenet_v3_large (10 classes), SGD lr 0.01 momentum 0.9"
echo "PyTorch's malloc: $torch_allocators (each PyTorch row is layout/allocator; b3: glibc + its block pool)"
echo "OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset} (both use libgomp; on a loaded machine, threads that"
echo "  spin-wait while their partner is descheduled slow both down: passive is the fairer setting there)"

# alternate MODE IMAGE BATCH WARMUP STEPS: the rounds of one configuration,
# PyTorch's layouts then b3's in each, their RESULT lines into $results.
alternate() {
  local mode=$1 image=$2 batch=$3 warmup=$4 steps=$5 round format allocator
  local b3_command=bench-step
  [[ "$mode" == eval ]] && b3_command=bench-infer
  for round in $(seq 1 "$rounds"); do
    for allocator in $torch_allocators; do
      for format in $torch_formats; do
        LD_PRELOAD="${torch_preload[$allocator]}" "$python" "$here/pytorch_step.py" --mode "$mode" \
          --image-size "$image" --batch-size "$batch" --format "$format" --threads "$threads" \
          --warmup "$warmup" --steps "$steps" |
          tee /dev/stderr | grep '^RESULT' | sed "s/\$/ round=$round/" >>"$results"
      done
    done
    for format in $b3_formats; do
      "$b3" "$b3_command" --image-size "$image" --batch-size "$batch" --format "$format" \
        --threads "$threads" --warmup "$warmup" --steps "$steps" |
        tee /dev/stderr | grep '^RESULT' | sed "s/\$/ round=$round/" >>"$results"
    done
  done
}

for size in $sizes; do
  image="${size%%:*}"
  batch="${size##*:}"
  if [[ "$image" -ge 128 ]]; then
    alternate train "$image" "$batch" "${WARMUP_224:-1}" "${STEPS_224:-4}"
  else
    alternate train "$image" "$batch" "${WARMUP:-2}" "${STEPS:-5}"
  fi
done 2> >(sed 's/^/  | /' >&2)

for size in $infer_sizes; do
  alternate eval "${size%%:*}" "${size##*:}" "${WARMUP_INFER:-1}" "${STEPS_INFER:-5}"
done 2> >(sed 's/^/  | /' >&2)

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
"$python" - "$results" <<'EOF'
import statistics, sys
from collections import defaultdict

runs = defaultdict(list)
torch_blas = set()
# (mode, image, batch, round) -> {(framework, format): img/s}
by_round = defaultdict(dict)
for line in open(sys.argv[1]):
    fields = dict(kv.split("=", 1) for kv in line.split()[1:])
    if fields["framework"] == "pytorch":  # a configuration is its layout and its malloc
        fields["format"] += "/" + fields["allocator"]
        torch_blas.add(fields["blas"])
    key = (fields.get("mode", "train"), int(fields["image"]), int(fields["batch"]),
           fields["framework"], fields["format"])
    runs[key].append((float(fields["img_per_s"]), float(fields["mib_per_image"]),
                      float(fields["peak_rss_mib"])))
    by_round[key[:3] + (int(fields["round"]),)][key[3:]] = float(fields["img_per_s"])

print()
print(f"PyTorch's BLAS: {', '.join(sorted(torch_blas)) or 'no PyTorch run'}")
if "reference" in torch_blas:
    print("  WARNING: PyTorch ran on the reference (netlib) BLAS; install libopenblas0-pthread"
          " (scripts/setup.sh does) or these ratios flatter b3")
print(f"{'mode':>5} {'size':>9} {'batch':>5} {'framework':>9} {'format':>13} {'runs':>4}"
      f" {'median img/s':>13} {'all runs':>24} {'MiB/image':>9} {'peak RSS':>9}")
summary = defaultdict(dict)
for key in sorted(runs):
    mode, image, batch, framework, fmt = key
    rates = [r[0] for r in runs[key]]
    med = statistics.median(rates)
    mem = statistics.median(r[1] for r in runs[key])
    peak = max(r[2] for r in runs[key])
    summary[(mode, image, batch)][(framework, fmt)] = (med, mem)
    print(f"{mode:>5} {image:>4}x{image:<4} {batch:>5} {framework:>9} {fmt:>13} {len(rates):>4}"
          f" {med:>13.2f} {' '.join(f'{r:.1f}' for r in rates):>24} {mem:>9.2f} {peak:>8.0f}M")
print()
for (mode, image, batch), entries in sorted(summary.items()):
    torch_best = max(((v, f) for (fw, f), v in entries.items() if fw == "pytorch"),
                     default=None)
    b3_best = max(((v, f) for (fw, f), v in entries.items() if fw == "b3"), default=None)
    if not torch_best or not b3_best:
        continue
    (t, tf), (b, bf) = torch_best, b3_best
    # Per round: b3's run over the better of PyTorch's runs in the same round
    # (adjacent in time, so drift in the machine's load cancels).
    round_ratios = []
    for (md, i, bt, r), rates in sorted(by_round.items()):
        if (md, i, bt) != (mode, image, batch):
            continue
        b3_rate = max((v for (fw, f), v in rates.items() if fw == "b3"), default=None)
        torch_rate = max((v for (fw, f), v in rates.items() if fw == "pytorch"), default=None)
        if b3_rate and torch_rate:
            round_ratios.append(b3_rate / torch_rate)
    print(f"{mode} {image}x{image} batch {batch}: b3 {bf} {b[0]:.2f} img/s / PyTorch {tf} {t[0]:.2f} img/s"
          f" = {b[0] / t[0]:.2f}x (per round: {' '.join(f'{x:.2f}' for x in round_ratios)};"
          f" median {statistics.median(round_ratios):.2f}x)")
    print(f"    {'step' if mode == 'train' else 'forward'} memory per image: b3 {b[1]:.2f} MiB, PyTorch {t[1]:.2f} MiB"
          f" ({b[1] / t[1] if t[1] > 0 else float('nan'):.2f}x)")
EOF
