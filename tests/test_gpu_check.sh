#!/usr/bin/env bash
# tests/test_gpu_check.sh: scripts/gpu_check.sh on fake machines, no GPU needed.
#
# Each case builds a machine in a scratch folder: a bin/ that is the whole PATH
# (stub nvidia-smi, nvcc, ldconfig, cmake, ctest where the case wants them, plus
# links to the few ordinary tools the script uses), a CUDA home (B3_CUDA_HOME)
# and a build dir, and runs the script there with `env -i`, so nothing of this
# machine's own driver, toolkit or loader leaks in.
#
#   a. driver only (nvidia-smi says CUDA 12.2), no nvcc, an empty CUDA home:
#      the toolkit stop, what to install, status 3, nothing built;
#   b. nvcc says release 13.0, nvidia-smi says CUDA 12.2: the driver-older-than-
#      toolkit stop, status 4; and with a CUDA 13.0 driver, no such stop;
#   c. --check-libraries with an ldconfig that lists libcudnn.so.9 near the top
#      of a long listing: found (piped into `grep -q` under pipefail, the
#      listing's writer dies of SIGPIPE and cuDNN read as missing); and without
#      cuDNN in the listing: reported missing, status 1;
#   d. no nvidia-smi: the no-driver stop, status 2, before any toolkit check;
#   e. a whole run on a machine with everything faked, already built: status 0,
#      each phase's wall time and budget, the summary, the report file.
#
# Usage: tests/test_gpu_check.sh (B3_GPU_CHECK_SCRIPT: another script to test).
# Prints one line per failed assertion; exit status 0 when all hold, else 1.
set -u

HERE="${BASH_SOURCE[0]%/*}"
[ "$HERE" != "${BASH_SOURCE[0]}" ] || HERE=.  # run as `bash test_gpu_check.sh`
ROOT="$(cd "$HERE/.." && pwd)"
SCRIPT="${B3_GPU_CHECK_SCRIPT:-$ROOT/scripts/gpu_check.sh}"
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/b3-gpu-check.XXXXXX")" || exit 1
trap 'rm -rf "$SCRATCH"' EXIT

FAILURES=0 CASE="" OUTPUT="" STATUS=0
fail() {
  echo "FAIL [$CASE]: $*"
  FAILURES=$((FAILURES + 1))
}
expect_status() {
  [ "$STATUS" -eq "$1" ] || fail "exit status $STATUS, expected $1"
}
expect_output() {  # expect_output <text>...: each text appears in the output
  local text
  for text in "$@"; do
    [[ $OUTPUT == *"$text"* ]] || fail "output lacks \"$text\""
  done
}
expect_no_output() {  # expect_no_output <text>...: no text appears in the output
  local text
  for text in "$@"; do
    [[ $OUTPUT != *"$text"* ]] || fail "output has \"$text\""
  done
}

# machine <name>: a fresh machine folder ($MACHINE) with bin/, cuda/ (empty)
# and build/; bin/ holds links to the ordinary tools, an ldconfig that lists
# nothing, and no CUDA command.
machine() {
  MACHINE="$SCRATCH/$1"
  mkdir -p "$MACHINE/bin" "$MACHINE/cuda" "$MACHINE/build"
  local tool path
  for tool in awk cat cut grep head mkdir nproc rm sed sort tail tee timeout tr wc; do
    path="$(command -v "$tool")" && ln -s "$path" "$MACHINE/bin/$tool"
  done
  # An empty loader cache, so that the script's /sbin/ldconfig fallback (for
  # PATHs without sbin) never brings in this machine's libraries.
  stub ldconfig "true"
}
stub() {  # stub <command> <bash body>: an executable bin/<command> on $MACHINE
  printf '#!%s\n%s\n' "$BASH" "$2" >"$MACHINE/bin/$1"
  chmod +x "$MACHINE/bin/$1"
}
stub_nvidia_smi() {  # stub_nvidia_smi <driver's CUDA version>
  stub nvidia-smi "case \"\$*\" in
  *--query-gpu*) echo '0, NVIDIA H100 80GB HBM3, 535.104.05, 81559 MiB, 1980 MHz' ;;
  *) echo '+-----------------------------------------------------------------------------+'
     echo '| NVIDIA-SMI 535.104.05    Driver Version: 535.104.05    CUDA Version: $1     |'
     echo '|-------------------------------+----------------------+----------------------+' ;;
esac"
}
stub_nvcc() {  # stub_nvcc <release>
  stub nvcc "echo 'nvcc: NVIDIA (R) Cuda compiler driver'
echo 'Cuda compilation tools, release $1, V$1.88'"
}
fake_toolkit() {  # the headers and libraries gpu_check.sh looks for, empty
  mkdir -p "$MACHINE/cuda/include" "$MACHINE/cuda/lib64"
  touch "$MACHINE/cuda/include/cuda_runtime.h" "$MACHINE/cuda/include/cublas_v2.h" \
    "$MACHINE/cuda/lib64/libcudart.so" "$MACHINE/cuda/lib64/libcublas.so"
}
# stub_ldconfig <first lines>: ldconfig -p printing the first lines, then
# 20000 more (1.5 MB, far more than a pipe holds, so a reader that quits early
# leaves the writer to die of SIGPIPE).
stub_ldconfig() {
  local listing="$MACHINE/ld.so.cache.txt" i
  {
    echo "20002 libs found in cache \`/etc/ld.so.cache'"
    printf '%s\n' "$@"
    for ((i = 0; i < 20000; i++)); do
      printf '\tlibfiller%d.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libfiller%d.so.1\n' "$i" "$i"
    done
  } >"$listing"
  stub ldconfig "exec cat '$listing'"
}
CUDNN_LINE=$'\tlibcudnn.so.9 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcudnn.so.9'
CUBLAS_LINE=$'\tlibcublas.so.12 (libc6,x86-64) => /usr/local/cuda/lib64/libcublas.so.12'

EXTRA_ENV=()  # more NAME=value settings for the next run_script
run_script() {  # run_script [args]: the script on $MACHINE; sets OUTPUT and STATUS
  OUTPUT="$(cd "$MACHINE" && env -i HOME="$MACHINE" PATH="$MACHINE/bin" \
    B3_CUDA_HOME="$MACHINE/cuda" B3_GPU_BUILD_DIR="$MACHINE/build" B3_PYTHON=python3 \
    ${EXTRA_ENV[@]+"${EXTRA_ENV[@]}"} "$BASH" "$SCRIPT" "$@" 2>&1)"
  STATUS=$?
}

# --------------------------------------------------------------------- a ---
CASE="a: driver, no toolkit"
machine a
stub_nvidia_smi 12.2
run_script
expect_status 3
expect_output "STOP: no usable CUDA toolkit" "nvcc (not on PATH" \
  "cuda_runtime.h" "libcublas.so" "CUDA 12.x or 13.x toolkit" "apt install cuda-toolkit-12-2" \
  "A pip PyTorch does not count" "cuDNN 9" "nvidia-cudnn-cu12" "-DCUDNN_INCLUDE_DIR=" \
  "-DCUDNN_LIBRARY=" "---- CUDA toolkit:" "report (all of the above): $MACHINE/build/gpu_check/report.txt"
expect_no_output "==== cuDNN and cuBLAS" "==== Build"
REPORT_TEXT="$(cat "$MACHINE/build/gpu_check/report.txt" 2>/dev/null)" ||
  fail "no report file $MACHINE/build/gpu_check/report.txt"
[[ $REPORT_TEXT == *"STOP: no usable CUDA toolkit"* ]] || fail "the report lacks the stop message"

# --------------------------------------------------------------------- b ---
CASE="b: driver older than the toolkit"
machine b
stub_nvidia_smi 12.2
stub_nvcc 13.0
fake_toolkit
run_script
expect_status 4
expect_output "nvcc: $MACHINE/bin/nvcc (CUDA 13.0)" \
  "STOP: the NVIDIA driver (535.104.05) supports CUDA 12.2, which is older than" \
  "the CUDA toolkit's 13.0" "install a CUDA toolkit no newer than" "update the NVIDIA"
expect_no_output "STOP: no usable CUDA toolkit" "==== cuDNN and cuBLAS"

CASE="b: driver as new as the toolkit"
machine b-ok
stub_nvidia_smi 13.0
stub_nvcc 13.0
fake_toolkit
# The empty loader cache has no cuDNN: the run stops at the library check instead.
run_script
expect_status 3
expect_output "driver's CUDA 13.0 >= toolkit's 13.0: ok" "==== cuDNN and cuBLAS" \
  "STOP: cuDNN was not found" "nvidia-cudnn-cu13"
expect_no_output "older than"

# --------------------------------------------------------------------- c ---
CASE="c: library check, cuDNN early in a long ldconfig listing"
grep -q '^set -o pipefail' "$SCRIPT" || fail "the script no longer sets pipefail: this case tests nothing"
machine c
stub_ldconfig "$CUDNN_LINE" "$CUBLAS_LINE"
run_script --check-libraries
expect_status 0
expect_output "libcudnn.so: found in ldconfig -p" "libcublas.so: found in ldconfig -p"
expect_no_output "not found" "pip copy"

CASE="c: library check, no cuDNN anywhere"
machine c-missing
stub_ldconfig "$CUBLAS_LINE"
run_script --check-libraries
expect_status 1
expect_output "libcudnn.so: not found" "libcublas.so: found in ldconfig -p"

# --------------------------------------------------------------------- d ---
CASE="d: no nvidia-smi"
machine d
stub_nvcc 13.0
fake_toolkit
run_script
expect_status 2
expect_output "STOP: no NVIDIA driver/GPU" "nvidia-smi is not on PATH"
expect_no_output "==== CUDA toolkit"

# --------------------------------------------------------------------- e ---
CASE="e: a whole run, already built"
machine e
stub_nvidia_smi 13.0
stub_nvcc 12.4
fake_toolkit
stub_ldconfig "$CUDNN_LINE" "$CUBLAS_LINE"
stub cmake "echo \"cmake \$*\" >>'$MACHINE/calls.txt'"
stub ctest "echo \"ctest \$*\" >>'$MACHINE/calls.txt'
echo '1/2 Test #1: test_cuda_tensor: fill ...   Passed    1.00 sec'
echo '100% tests passed, 0 tests failed out of 2'"
echo "B3_CUDA:STRING=ON" >"$MACHINE/build/CMakeCache.txt"
stub b3 "case \"\$*\" in
  *--help*) echo '  --device TEXT  cpu or cuda' ;;
  *) for a in \"\$@\"; do [ \"\$prev\" = --batch-size ] && b=\$a; prev=\$a; done
     echo \"RESULT batch=\$b img_per_s=1234.5 peak_gpu_bytes=2147483648\" ;;
esac"
mv "$MACHINE/bin/b3" "$MACHINE/build/b3"  # built already: b3 beside CMakeCache.txt
run_script
expect_status 0
expect_output "---- GPU and driver: " "---- CUDA toolkit: " "---- cuDNN and cuBLAS: " \
  "(budget 40s)" "(budget 120s)" "(budget 100s)" "(budget 150s)" \
  "---- Training benchmark, b3: " "---- Training benchmark, PyTorch: " \
  "CUDA tests               | 100% tests passed, 0 tests failed out of 2; 0 skipped" \
  "train batch 512          | b3 1234.5 img/s, peak 2.00 GiB; PyTorch: n/a" \
  "time per phase: GPU and driver " "total time: "
[[ $OUTPUT == *$'\n'"report (all of the above): $MACHINE/build/gpu_check/report.txt" ]] ||
  fail "the last line does not name the report file"
CALLS="$(cat "$MACHINE/calls.txt" 2>/dev/null)"
[[ $CALLS == *"cmake --build $MACHINE/build"* ]] || fail "no cmake --build (calls: $CALLS)"
[[ $CALLS != *"cmake -S"* ]] || fail "configured again although the build dir has a cache"
[[ $CALLS == *"ctest --test-dir $MACHINE/build -R cuda"* ]] || fail "no ctest -R cuda (calls: $CALLS)"
REPORT_TEXT="$(cat "$MACHINE/build/gpu_check/report.txt" 2>/dev/null)"
[[ $REPORT_TEXT == *"time per phase: "* ]] || fail "the report lacks the summary"

# --------------------------------------------------------------------- f ---
# B3_GPU_PREBUILT=1: programs built elsewhere, no object files; nothing is
# built, and a missing program stops the run naming it.
prebuilt_machine() {  # prebuilt_machine <name>: case e's machine, b3 built, no cmake expected
  machine "$1"
  stub_nvidia_smi 13.0
  stub_nvcc 13.0
  fake_toolkit
  stub_ldconfig "$CUDNN_LINE" "$CUBLAS_LINE"
  stub cmake "echo \"cmake \$*\" >>'$MACHINE/calls.txt'"
  stub ctest "echo '100% tests passed, 0 tests failed out of 1'"
  stub b3 "echo 'RESULT batch=128 img_per_s=1.0'"
  mv "$MACHINE/bin/b3" "$MACHINE/build/b3"
}
CASE="f: prebuilt, a test program missing"
prebuilt_machine f-missing
EXTRA_ENV=(B3_GPU_PREBUILT=1)
run_script
EXTRA_ENV=()
expect_status 1
expect_output "B3_GPU_PREBUILT=1 but $MACHINE/build lacks: test_cuda_" \
  "build                    | FAILED: prebuilt programs missing"
expect_no_output "==== CUDA tests"
[ ! -e "$MACHINE/calls.txt" ] || fail "cmake ran although the build is prebuilt: $(cat "$MACHINE/calls.txt")"

CASE="f: prebuilt, every program there"
prebuilt_machine f-ok
for source in "$ROOT"/tests/test_cuda_*.cpp; do
  program="${source##*/}"
  printf '#!/bin/sh\n' >"$MACHINE/build/${program%.cpp}"
  chmod +x "$MACHINE/build/${program%.cpp}"
done
EXTRA_ENV=(B3_GPU_PREBUILT=1)
run_script
EXTRA_ENV=()
expect_status 0
expect_output "B3_GPU_PREBUILT=1: using the programs in $MACHINE/build as they are" \
  "build                    | prebuilt elsewhere, not rebuilt here" "==== CUDA tests"
[ ! -e "$MACHINE/calls.txt" ] || fail "cmake ran although the build is prebuilt: $(cat "$MACHINE/calls.txt")"

if [ "$FAILURES" -ne 0 ]; then
  echo "$FAILURES assertion(s) failed"
  exit 1
fi
echo "all gpu_check.sh cases passed"
