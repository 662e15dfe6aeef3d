#!/usr/bin/env bash
# scripts/gpu_check.sh: one command for any machine with an NVIDIA GPU.
#
#   1. prints the GPU and driver, and stops when there is none;
#   2. checks the CUDA toolkit before anything else needs it (nvcc, cuda_runtime.h,
#      cuBLAS; CUDA 12.0 or newer) and that the driver is not older than it, and
#      stops saying what to install when it is missing or does not fit;
#   3. finds cuDNN and cuBLAS where a PyTorch pip install keeps them
#      (site-packages/nvidia/{cudnn,cublas}) when the loader cannot;
#   4. builds b3 with CUDA for this GPU if needed (build-gpu/);
#   5. runs the CUDA test suites (ctest -R cuda);
#   6. trains MobileNetV3-Large at 224x224, mixed precision, on synthetic
#      data at batch 128 and 512, with b3 and with PyTorch, and prints
#      images/s, peak memory and the ratio;
#   7. ends with a summary table.
# Budget: under 8 minutes when the build is done beforehand (here, or on
# another machine and carried in: B3_GPU_PREBUILT=1): each phase has a
# timeout, and they add up to 440 s: the checks ~5 s (each command bounded by
# 20 s), the build 40 s (an up-to-date check), the CUDA tests 120 s (~120
# processes, 8 at a time, each loading cuDNN), b3's benchmark 50 s per batch
# size (cuDNN's algorithm search, ~190 convolutions at batch 512, then the
# timed steps), the step as a CUDA graph beside the eager one 30 s (batch
# 128, 10 steps each), PyTorch's 150 s for all batch sizes (60 s was too
# short for batch 512). Seen on an H200 with a carried build: 145 s in all,
# the CUDA tests 27 s, PyTorch 100 s. A fresh build is outside the budget
# (timeout 1200 s).
# Each phase prints its wall time when it ends; everything printed also goes to
# <build dir>/gpu_check/report.txt, whose path is the last line.
# Exit status: 0 when the build and every CUDA test passed, 1 when the build or
# a CUDA test failed, 2 when there is no NVIDIA driver or GPU, 3 when the CUDA
# toolkit or cuDNN is missing or too old, 4 when the driver is older than the
# toolkit.
#
# Usage: scripts/gpu_check.sh [--check-libraries]
#   --check-libraries  only say where cuDNN and cuBLAS come from (status 0 when
#                      both are found, 1 otherwise); needs no GPU.
#
# Settings (environment): B3_GPU_BUILD_DIR (build-gpu), JOBS (nproc),
# B3_CUDA_HOME (the toolkit's root; default: above the nvcc on PATH, else
# /usr/local/cuda), B3_LDCONFIG (ldconfig on PATH, else /sbin/ldconfig),
# B3_PYTHON (python3), B3_GPU_BENCH_STEPS (20), B3_GPU_BATCHES ("128 512"),
# B3_GPU_BUILD_TIMEOUT (40 s when the build dir holds a build, else 1200 s),
# B3_GPU_TEST_TIMEOUT (120 s), B3_GPU_TEST_JOBS (JOBS, at most 8),
# B3_GPU_BENCH_TIMEOUT (50 s per b3 batch size), B3_GPU_TORCH_TIMEOUT (150 s).
# B3_GPU_PREBUILT=1: the build dir was built on another machine and copied in
# without its object files (b3 and the test_cuda_* programs, the CTest files):
# skip the build and use them as they are.
# Every other command (nvidia-smi, nvcc, cmake, ctest, ...) is the one on PATH,
# so a test can fake a machine (tests/test_gpu_check.sh).
# Full logs of every phase: <build dir>/gpu_check/. To pin an asynchronous
# CUDA error to the kernel that caused it, rerun with CUDA_LAUNCH_BLOCKING=1.
set -u
set -o pipefail

SCRIPT_DIR="${BASH_SOURCE[0]%/*}"
[ "$SCRIPT_DIR" != "${BASH_SOURCE[0]}" ] || SCRIPT_DIR=.  # run as `bash gpu_check.sh`
ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
BUILD_DIR="${B3_GPU_BUILD_DIR:-$ROOT/build-gpu}"
LOG_DIR="$BUILD_DIR/gpu_check"  # every phase's full log
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 4)}"
PYTHON="${B3_PYTHON:-python3}"
BENCH_STEPS="${B3_GPU_BENCH_STEPS:-20}"
read -r -a BATCHES <<<"${B3_GPU_BATCHES:-128 512}"
if [ -f "$BUILD_DIR/CMakeCache.txt" ] && [ -x "$BUILD_DIR/b3" ]; then
  BUILD_TIMEOUT="${B3_GPU_BUILD_TIMEOUT:-40}"  # built already: checking costs seconds
else
  BUILD_TIMEOUT="${B3_GPU_BUILD_TIMEOUT:-1200}"  # a fresh build: outside the 8 minutes
fi
TEST_TIMEOUT="${B3_GPU_TEST_TIMEOUT:-120}"
TEST_JOBS="${B3_GPU_TEST_JOBS:-$((JOBS < 8 ? JOBS : 8))}"
BENCH_TIMEOUT="${B3_GPU_BENCH_TIMEOUT:-50}"
GRAPH_TIMEOUT="${B3_GPU_GRAPH_TIMEOUT:-30}"
TORCH_TIMEOUT="${B3_GPU_TORCH_TIMEOUT:-150}"
QUERY_TIMEOUT=20  # nvidia-smi, nvcc --version, python probes: seconds normally
CUDA_MINIMUM=12.0  # as cmake/FindCudaBackend.cmake: nvcc's C++20 starts with CUDA 12
START_SECONDS=$SECONDS

SUMMARY_KEYS=()
SUMMARY_VALUES=()
record() {  # record <item> <result...>
  SUMMARY_KEYS+=("$1")
  shift
  SUMMARY_VALUES+=("$*")
}
# section <title> [budget seconds]: ends the phase before it (printing its wall
# time) and starts the next.
PHASE="" PHASE_START=0 PHASE_BUDGET="" PHASE_TIMES=""
end_phase() {
  [ -n "$PHASE" ] || return 0
  local took=$((SECONDS - PHASE_START))
  printf -- '---- %s: %ds%s\n' "$PHASE" "$took" "${PHASE_BUDGET:+ (budget ${PHASE_BUDGET}s)}"
  local short="${PHASE%%[(:]*}"  # "CUDA tests (ctest -R cuda)": "CUDA tests"
  PHASE_TIMES+="${PHASE_TIMES:+, }${short% } ${took}s"
  PHASE=""
}
section() {
  end_phase
  PHASE="$1" PHASE_START=$SECONDS PHASE_BUDGET="${2:-}"
  printf '\n==== %s  (at %ds)\n' "$1" $((SECONDS - START_SECONDS))
}
have() { command -v "$1" >/dev/null 2>&1; }

print_summary() {
  end_phase
  printf '\n==== Summary\n'
  local width=24 i
  printf '%-*s | %s\n' "$width" "item" "result"
  printf '%s\n' "-------------------------+------------------------------------------------------"
  for i in ${SUMMARY_KEYS[@]+"${!SUMMARY_KEYS[@]}"}; do
    printf '%-*s | %s\n' "$width" "${SUMMARY_KEYS[$i]}" "${SUMMARY_VALUES[$i]}"
  done
  printf 'time per phase: %s\n' "${PHASE_TIMES:-none}"
  printf 'total time: %ds\n' $((SECONDS - START_SECONDS))
}

REPORT="" TEE_PID=""
finish() {  # finish <exit status>
  print_summary
  if [ -n "$REPORT" ]; then
    echo "report (all of the above): $REPORT"
    exec 1>&3 2>&4 3>&- 4>&-  # tee sees the end of its input, writes the rest, exits
    wait "$TEE_PID" 2>/dev/null
  fi
  exit "$1"
}

version_less() {  # version_less <a> <b>: true when major.minor of a is below b's
  local a_major="${1%%.*}" b_major="${2%%.*}" a_minor b_minor
  a_minor="${1#*.}" b_minor="${2#*.}"
  a_minor="${a_minor%%.*}" b_minor="${b_minor%%.*}"
  ((10#$a_major < 10#$b_major || (10#$a_major == 10#$b_major && 10#$a_minor < 10#$b_minor)))
}

first_existing() {  # first_existing <file pattern> <dir>...: prints the first match
  local pattern="$1" dir path
  shift
  for dir in "$@"; do
    for path in "$dir"/$pattern; do  # the pattern globs: libcudnn.so*
      if [ -e "$path" ]; then
        printf '%s\n' "$path"
        return 0
      fi
    done
  done
  return 1
}

# ----------------------------------------------------- where the toolkit is ---
# NVCC: $B3_CUDA_HOME/bin/nvcc, else the nvcc on PATH, else
# /usr/local/cuda/bin/nvcc. CUDA_HOME: $B3_CUDA_HOME, else the directory above
# nvcc's bin/ (/usr for Debian's nvidia-cuda-toolkit), else /usr/local/cuda.
locate_toolkit() {
  NVCC=""
  CUDA_HOME="${B3_CUDA_HOME:-}"
  if [ -n "$CUDA_HOME" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then
    NVCC="$CUDA_HOME/bin/nvcc"
  elif have nvcc; then
    NVCC="$(command -v nvcc)"
    if [ -z "$CUDA_HOME" ]; then
      CUDA_HOME="${NVCC%/*}"
      CUDA_HOME="${CUDA_HOME%/bin}"
    fi
  elif [ -z "$CUDA_HOME" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
    NVCC=/usr/local/cuda/bin/nvcc
  fi
  CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
  TOOLKIT_INCLUDE_DIRS=("$CUDA_HOME/include" "$CUDA_HOME"/targets/*/include)
  TOOLKIT_LIB_DIRS=("$CUDA_HOME/lib64" "$CUDA_HOME/lib" "$CUDA_HOME"/targets/*/lib
                    "$CUDA_HOME/lib/x86_64-linux-gnu" "$CUDA_HOME/lib/aarch64-linux-gnu")
}

# What to install, for the driver's CUDA version (DRIVER_CUDA, may be empty).
advice_major() {  # the CUDA major version to install for: the toolkit's, else the driver's
  local version="${NVCC_VERSION:-${DRIVER_CUDA:-}}"
  local major="${version%%.*}"
  case "$major" in 13) echo 13 ;; *) echo 12 ;; esac
}
toolkit_advice() {
  local driver="${DRIVER_CUDA:-}"
  if [ -n "$driver" ] && version_less "$driver" "$CUDA_MINIMUM"; then
    echo "  - first a newer NVIDIA driver: this one supports CUDA $driver only and b3 needs"
    echo "    CUDA $CUDA_MINIMUM or newer (drivers 525 and newer support CUDA 12);"
  fi
  local shown="$driver" package="cuda-toolkit-12-x"
  if [ -z "$driver" ]; then
    shown='see "CUDA Version" in nvidia-smi'
  elif ! version_less "$driver" "$CUDA_MINIMUM"; then
    package="cuda-toolkit-${driver//./-}"
  fi
  echo "  - a CUDA 12.x or 13.x toolkit (b3 needs CUDA $CUDA_MINIMUM or newer), no newer than"
  echo "    the driver's CUDA version ($shown): NVIDIA's packages"
  echo "    (https://developer.nvidia.com/cuda-downloads; with their apt repository:"
  echo "    apt install $package), then put its bin/ on PATH or set"
  echo "    B3_CUDA_HOME to its root. A pip PyTorch does not count: its wheels carry no nvcc,"
  echo "    no CUDA headers and no unversioned libcudart.so/libcublas.so to link against;"
  cudnn_advice
}
cudnn_advice() {
  local major
  major="$(advice_major)"
  echo "  - cuDNN 9 for CUDA $major: NVIDIA's cudnn9-cuda-$major package, or the"
  echo "    pip wheel nvidia-cudnn-cu$major (-cu12 for a CUDA 12 toolkit, -cu13 for CUDA 13), whose"
  echo "    headers and libraries serve: this script finds a pip copy itself"
  echo "    ($PYTHON -c 'import nvidia.cudnn'); by hand, configure with"
  echo "      -DCUDNN_INCLUDE_DIR=<site-packages>/nvidia/cudnn/include"
  echo "      -DCUDNN_LIBRARY=<site-packages>/nvidia/cudnn/lib/libcudnn.so.9"
  echo "    and put <site-packages>/nvidia/cudnn/lib on LD_LIBRARY_PATH."
}

# check_toolkit: nvcc, its version, cuda_runtime.h and cuBLAS, all from one
# toolkit; prints what it found, or what is missing and what to install.
check_toolkit() {
  local missing=() output
  NVCC_VERSION=""
  if [ -z "$NVCC" ]; then
    missing+=("nvcc (not on PATH, not in ${B3_CUDA_HOME:-/usr/local/cuda}/bin)")
  else
    output="$(timeout "$QUERY_TIMEOUT" "$NVCC" --version 2>&1)" || true
    [[ $output =~ release\ ([0-9]+\.[0-9]+) ]] && NVCC_VERSION="${BASH_REMATCH[1]}"
    if [ -z "$NVCC_VERSION" ]; then
      missing+=("a CUDA version from '$NVCC --version' (no \"release X.Y\" in: ${output:0:200})")
    elif version_less "$NVCC_VERSION" "$CUDA_MINIMUM"; then
      missing+=("CUDA $CUDA_MINIMUM or newer (nvcc $NVCC is CUDA $NVCC_VERSION)")
    fi
  fi
  first_existing cuda_runtime.h "${TOOLKIT_INCLUDE_DIRS[@]}" >/dev/null ||
    missing+=("cuda_runtime.h (in $CUDA_HOME/include)")
  first_existing cublas_v2.h "${TOOLKIT_INCLUDE_DIRS[@]}" >/dev/null ||
    missing+=("cublas_v2.h (in $CUDA_HOME/include)")
  first_existing libcudart.so "${TOOLKIT_LIB_DIRS[@]}" >/dev/null ||
    missing+=("libcudart.so (in $CUDA_HOME/lib64)")
  first_existing libcublas.so "${TOOLKIT_LIB_DIRS[@]}" >/dev/null ||
    missing+=("libcublas.so (in $CUDA_HOME/lib64)")
  if [ ${#missing[@]} -eq 0 ]; then
    echo "nvcc: $NVCC (CUDA $NVCC_VERSION); headers and cuBLAS in $CUDA_HOME"
    return 0
  fi
  echo "STOP: no usable CUDA toolkit, so b3 cannot be built here. Missing:"
  printf '  - %s\n' "${missing[@]}"
  echo "Install:"
  toolkit_advice
  return 1
}

# ---------------------------------------------- cuDNN and cuBLAS location ---
# ldconfig -p is read once into a variable and searched in bash: piped into
# `grep -q`, grep exits at the first match, ldconfig dies of SIGPIPE, and under
# pipefail the pipeline fails (141), so a cuDNN that is present read as missing.
LOADER_CACHE=""
read_loader_cache() {
  local ldconfig="${B3_LDCONFIG:-}"
  if [ -z "$ldconfig" ]; then
    ldconfig="$(command -v ldconfig 2>/dev/null)" || ldconfig=/sbin/ldconfig
  fi
  LOADER_CACHE="$("$ldconfig" -p 2>/dev/null)" || true
}
# find_library <library file name>: prints where the loader, LD_LIBRARY_PATH or
# the toolkit has it (any version: libcudnn.so matches libcudnn.so.9).
find_library() {
  # ldconfig -p lines: "<tab>libcudnn.so.9 (libc6,x86-64) => /path/libcudnn.so.9"
  if [[ $LOADER_CACHE == *[[:space:]]"$1"[[:space:].]* ]]; then
    echo "ldconfig -p (the loader's cache)"
    return 0
  fi
  local -a dirs
  IFS=: read -r -a dirs <<<"${LD_LIBRARY_PATH:-}"
  first_existing "$1*" ${dirs[@]+"${dirs[@]}"} "${TOOLKIT_LIB_DIRS[@]}"
}
pip_package_dir() {  # pip_package_dir <nvidia subpackage>: the pip wheel's directory, if any
  have "$PYTHON" || return 1
  timeout "$QUERY_TIMEOUT" "$PYTHON" -c "import nvidia.$1 as m; print(list(m.__path__)[0])" 2>/dev/null
}
CMAKE_EXTRA=()
CUDNN_FOUND=0
check_libraries() {  # prints where cuDNN and cuBLAS come from; status 0 when both are found
  local lib soname dir where status=0
  local -a libraries
  read_loader_cache
  for lib in cudnn cublas; do
    soname="lib$lib.so"
    if where="$(find_library "$soname")"; then
      echo "$soname: found in $where"
      [ "$lib" = cudnn ] && CUDNN_FOUND=1
      continue
    fi
    if dir="$(pip_package_dir "$lib")" && [ -d "$dir/lib" ]; then
      export LD_LIBRARY_PATH="$dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      echo "$soname: not on the loader path; using the PyTorch pip copy in $dir/lib"
      if [ "$lib" = cudnn ]; then
        CUDNN_FOUND=1
        if [ -f "$dir/include/cudnn.h" ]; then
          libraries=("$dir"/lib/libcudnn.so*)  # pip wheels hold only libcudnn.so.9
          CMAKE_EXTRA+=("-DCUDNN_INCLUDE_DIR=$dir/include" "-DCUDNN_LIBRARY=${libraries[0]}")
        fi
      fi
    else
      echo "$soname: not found (not in ldconfig -p, LD_LIBRARY_PATH, $CUDA_HOME's lib dirs, nor a pip install of PyTorch)"
      status=1
    fi
  done
  # NCCL is optional (GPU data parallelism): without it the build leaves it out.
  if where="$(find_library libnccl.so)"; then
    echo "libnccl.so: found in $where"
  elif dir="$(pip_package_dir nccl)" && [ -d "$dir/lib" ]; then
    export LD_LIBRARY_PATH="$dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "libnccl.so: not on the loader path; using the PyTorch pip copy in $dir/lib"
  else
    echo "libnccl.so: absent; it is optional (b3 then builds without NCCL and its NCCL tests skip)"
  fi
  return "$status"
}

if [ "${1:-}" = --check-libraries ]; then
  locate_toolkit
  check_libraries
  exit $?
elif [ $# -gt 0 ]; then
  echo "usage: $0 [--check-libraries]" >&2
  exit 64
fi

# Everything printed from here on also goes to the report file.
if ! mkdir -p "$LOG_DIR"; then
  echo "cannot create $LOG_DIR (set B3_GPU_BUILD_DIR to a writable directory)" >&2
  exit 1
fi
REPORT="$LOG_DIR/report.txt"
exec 3>&1 4>&2
exec > >(tee "$REPORT") 2>&1
TEE_PID=$!

# ----------------------------------------------------------------- GPU ---
section "GPU and driver"
if ! have nvidia-smi; then
  echo "STOP: no NVIDIA driver/GPU: nvidia-smi is not on PATH (no NVIDIA driver is"
  echo "installed, or its directory is not on PATH). Run this on a machine with an NVIDIA GPU."
  record "GPU" "none (no nvidia-smi)"
  finish 2
fi
if ! GPU_LINES="$(timeout "$QUERY_TIMEOUT" nvidia-smi --query-gpu=index,name,driver_version,memory.total,clocks.max.sm \
  --format=csv,noheader 2>&1)"; then
  echo "STOP: no NVIDIA driver/GPU: nvidia-smi failed: $GPU_LINES"
  record "GPU" "none (nvidia-smi failed)"
  finish 2
fi
echo "$GPU_LINES"
# Outputs are captured first and parsed in bash: no pipeline into a reader
# that stops early (head, grep -q), which under pipefail fails with SIGPIPE.
DRIVER_CUDA=""
SMI_HEADER="$(timeout "$QUERY_TIMEOUT" nvidia-smi 2>/dev/null)" || true
[[ $SMI_HEADER =~ CUDA\ Version:\ *([0-9]+\.[0-9]+) ]] && DRIVER_CUDA="${BASH_REMATCH[1]}"
IFS=, read -r _ GPU_NAME DRIVER_VERSION _ <<<"$GPU_LINES"
GPU_NAME="${GPU_NAME# }" DRIVER_VERSION="${DRIVER_VERSION# }"
GPU_COUNT=0
while IFS= read -r _; do GPU_COUNT=$((GPU_COUNT + 1)); done <<<"$GPU_LINES"
if [ -n "$DRIVER_CUDA" ]; then
  echo "driver supports CUDA $DRIVER_CUDA"
else
  echo "driver's CUDA version: unknown (no \"CUDA Version\" in the header nvidia-smi prints)"
fi
record "GPU" "$GPU_NAME ($GPU_COUNT device(s))"
record "driver" "$DRIVER_VERSION, supports CUDA ${DRIVER_CUDA:-?}"

# -------------------------------------------------------------- toolkit ---
# Before anything needs it: a machine with only the driver and a pip PyTorch
# has no nvcc, headers or unversioned libraries to build b3 with.
section "CUDA toolkit"
locate_toolkit
if ! check_toolkit; then
  record "CUDA toolkit" "missing or unusable (see above)"
  finish 3
fi
record "CUDA toolkit" "$NVCC_VERSION ($NVCC)"
# A driver older than the toolkit cannot run what it builds: every CUDA call
# fails with cudaErrorInsufficientDriver, which the tests read as "no GPU".
if [ -z "$DRIVER_CUDA" ]; then
  echo "warning: cannot compare the driver with CUDA $NVCC_VERSION: nvidia-smi printed no \"CUDA Version\""
elif version_less "$DRIVER_CUDA" "$NVCC_VERSION"; then
  echo "STOP: the NVIDIA driver ($DRIVER_VERSION) supports CUDA $DRIVER_CUDA, which is older than"
  echo "the CUDA toolkit's $NVCC_VERSION ($NVCC): programs built with it cannot run here, and"
  echo "every CUDA test would report no GPU. Either install a CUDA toolkit no newer than"
  echo "$DRIVER_CUDA (and at least $CUDA_MINIMUM; point B3_CUDA_HOME at it), or update the NVIDIA"
  echo "driver to one that supports CUDA $NVCC_VERSION."
  record "driver vs toolkit" "driver's CUDA $DRIVER_CUDA < toolkit's $NVCC_VERSION"
  finish 4
else
  echo "driver's CUDA $DRIVER_CUDA >= toolkit's $NVCC_VERSION: ok"
fi

# ------------------------------------------------------ cuDNN and cuBLAS ---
section "cuDNN and cuBLAS"
check_libraries
if [ "$CUDNN_FOUND" -eq 0 ]; then
  echo "STOP: cuDNN was not found, and every b3 convolution on a GPU needs it. Install:"
  cudnn_advice
  record "cuDNN" "missing"
  finish 3
fi
# The versions the loader actually gives us, asked from the libraries.
LIB_VERSIONS=""
have "$PYTHON" && LIB_VERSIONS="$(timeout "$QUERY_TIMEOUT" "$PYTHON" - 2>/dev/null <<'EOF'
import ctypes
def load(names):
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            pass
    return None
cudnn = load(["libcudnn.so.9", "libcudnn.so.8", "libcudnn.so"])
if cudnn is None:
    print("cudnn=missing")
else:
    cudnn.cudnnGetVersion.restype = ctypes.c_size_t
    v = cudnn.cudnnGetVersion()
    print("cudnn=%d.%d.%d" % (v // 10000, (v % 10000) // 100, v % 100) if v >= 10000
          else "cudnn=%d.%d.%d" % (v // 1000, (v % 1000) // 100, v % 100))
cublas = load(["libcublas.so.13", "libcublas.so.12", "libcublas.so"])
if cublas is None:
    print("cublas=missing")
else:
    parts = []
    for prop in range(3):  # MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL
        value = ctypes.c_int()
        cublas.cublasGetProperty(prop, ctypes.byref(value))
        parts.append(str(value.value))
    print("cublas=" + ".".join(parts))
EOF
)"
CUDNN_VERSION="" CUBLAS_VERSION=""
[[ $LIB_VERSIONS =~ cudnn=([^[:space:]]+) ]] && CUDNN_VERSION="${BASH_REMATCH[1]}"
[[ $LIB_VERSIONS =~ cublas=([^[:space:]]+) ]] && CUBLAS_VERSION="${BASH_REMATCH[1]}"
echo "cuDNN (loaded): ${CUDNN_VERSION:-unknown (no $PYTHON to ask)}"
echo "cuBLAS (loaded): ${CUBLAS_VERSION:-unknown (no $PYTHON to ask)}"
record "cuDNN" "${CUDNN_VERSION:-unknown}"
record "cuBLAS" "${CUBLAS_VERSION:-unknown}"

# ---------------------------------------------------------------- build ---
section "Build ($BUILD_DIR)" "$BUILD_TIMEOUT"
CUDA_TEST_TARGETS=()
for source in "$ROOT"/tests/test_cuda_*.cpp; do
  source="${source##*/}"
  [ "$source" != "test_cuda_*.cpp" ] && CUDA_TEST_TARGETS+=("${source%.cpp}")
done
if [ "${B3_GPU_PREBUILT:-0}" = 1 ]; then
  # Built on another machine and copied in without its object files: a build
  # here would start from scratch, so check that every program is present.
  MISSING_PROGRAMS=()
  for program in b3 ${CUDA_TEST_TARGETS[@]+"${CUDA_TEST_TARGETS[@]}"}; do
    [ -x "$BUILD_DIR/$program" ] || MISSING_PROGRAMS+=("$program")
  done
  if [ ${#MISSING_PROGRAMS[@]} -gt 0 ]; then
    echo "B3_GPU_PREBUILT=1 but $BUILD_DIR lacks: ${MISSING_PROGRAMS[*]}"
    record "build" "FAILED: prebuilt programs missing (${MISSING_PROGRAMS[*]})"
    finish 1
  fi
  echo "B3_GPU_PREBUILT=1: using the programs in $BUILD_DIR as they are (not rebuilt)"
  record "build" "prebuilt elsewhere, not rebuilt here"
else
  if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
    echo "configuring for this GPU (CMAKE_CUDA_ARCHITECTURES=native)"
    if ! cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DB3_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES=native -DCMAKE_CUDA_COMPILER="$NVCC" -DCUDAToolkit_ROOT="$CUDA_HOME" \
      ${CMAKE_EXTRA[@]+"${CMAKE_EXTRA[@]}"} >"$LOG_DIR/configure.log" 2>&1; then
      tail -n 30 "$LOG_DIR/configure.log"
      echo "configure failed (full log: $LOG_DIR/configure.log)"
      record "build" "FAILED at configure"
      finish 1
    fi
  fi
  echo "building b3 and ${#CUDA_TEST_TARGETS[@]} CUDA test suites with $JOBS jobs (timeout ${BUILD_TIMEOUT}s)"
  timeout "$BUILD_TIMEOUT" cmake --build "$BUILD_DIR" -j "$JOBS" --target b3 \
    ${CUDA_TEST_TARGETS[@]+"${CUDA_TEST_TARGETS[@]}"} >"$LOG_DIR/build.log" 2>&1
  BUILD_STATUS=$?
  if [ $BUILD_STATUS -eq 124 ]; then
    tail -n 5 "$LOG_DIR/build.log"
    echo "build timed out after ${BUILD_TIMEOUT}s (full log: $LOG_DIR/build.log). A build from"
    echo "scratch does not fit the 8 minutes: build beforehand, or raise B3_GPU_BUILD_TIMEOUT."
    record "build" "TIMED OUT after ${BUILD_TIMEOUT}s (see $LOG_DIR/build.log)"
    finish 1
  elif [ $BUILD_STATUS -ne 0 ]; then
    grep -m 20 -E 'error|Error' "$LOG_DIR/build.log"
    tail -n 20 "$LOG_DIR/build.log"
    echo "build failed with status $BUILD_STATUS (full log: $LOG_DIR/build.log)"
    record "build" "FAILED (see $LOG_DIR/build.log)"
    finish 1
  fi
  WARNINGS="$(grep -c 'warning' "$LOG_DIR/build.log" || true)"
  record "build" "ok ($WARNINGS warning lines)"
fi

# ---------------------------------------------------------------- tests ---
section "CUDA tests (ctest -R cuda)" "$TEST_TIMEOUT"
TEST_LOG="$LOG_DIR/cuda-tests.log"
echo "ctest -R cuda -j $TEST_JOBS (timeout ${TEST_TIMEOUT}s, 60 s per test)"
timeout "$TEST_TIMEOUT" ctest --test-dir "$BUILD_DIR" -R cuda --output-on-failure \
  -j "$TEST_JOBS" --timeout 60 >"$TEST_LOG" 2>&1
TEST_STATUS=$?
grep -E 'Test +#|tests passed|Skipped|Failed|\*\*\*' "$TEST_LOG" | tail -n 60
TEST_LINE="$(grep -E 'tests passed' "$TEST_LOG" | tail -n1)"
SKIPPED="$(grep -c '\*\*\*Skipped' "$TEST_LOG" || true)"
if [ "$SKIPPED" != "0" ]; then
  # On a machine with a GPU every CUDA test must run: a skip verified nothing.
  echo "error: $SKIPPED CUDA test(s) skipped on a machine with a GPU. One of them says why:"
  "$BUILD_DIR/test_cuda_convert" --test-case='*fill*' 2>&1 | grep 'SKIPPED' || true
  [ $TEST_STATUS -eq 0 ] && TEST_STATUS=1
fi
if [ $TEST_STATUS -eq 124 ]; then
  record "CUDA tests" "TIMED OUT after ${TEST_TIMEOUT}s (log: $TEST_LOG)"
elif [ -z "$TEST_LINE" ]; then
  record "CUDA tests" "did not run (status $TEST_STATUS, log: $TEST_LOG)"
else
  record "CUDA tests" "$TEST_LINE; $SKIPPED skipped$([ $TEST_STATUS -eq 0 ] || echo ': FAILED')"
fi

# ------------------------------------------------------------ benchmark ---
# Each framework prints one line per batch size with batch=<B>, img_per_s=<x>
# (or images_per_second=<x>) and peak_gpu_bytes=<y> (or peak_memory_bytes=<y>).
# One section per framework, so each prints its own wall time.
declare -A B3_IPS B3_MEM TORCH_IPS TORCH_MEM
parse_results() {  # parse_results <b3|torch> < lines
  local line batch ips mem
  while read -r line; do
    batch="" ips="" mem=""
    [[ $line =~ (^|[[:space:]])batch=([0-9]+) ]] && batch="${BASH_REMATCH[2]}"
    [[ $line =~ (img_per_s|images_per_second)=([0-9.]+) ]] && ips="${BASH_REMATCH[2]}"
    [[ $line =~ (peak_gpu_bytes|peak_memory_bytes)=([0-9]+) ]] && mem="${BASH_REMATCH[2]}"
    if [ -z "$batch" ] || [ -z "$ips" ]; then continue; fi
    if [ "$1" = b3 ]; then B3_IPS[$batch]="$ips"; B3_MEM[$batch]="${mem:-?}"; fi
    if [ "$1" = torch ]; then TORCH_IPS[$batch]="$ips"; TORCH_MEM[$batch]="${mem:-?}"; fi
  done
}

# `b3 bench-step --device cuda --amp` times forward + backward + Adam with the
# production kernels (autocast f16, dynamic loss scaling, channels_last), with
# the same settings as the PyTorch script below; its RESULT line carries
# batch=, img_per_s= and peak_gpu_bytes= (the caching allocator's peak in use).
section "Training benchmark, b3: MobileNetV3-Large, 224x224, mixed precision, synthetic data" \
  "$((BENCH_TIMEOUT * ${#BATCHES[@]}))"
B3_BENCH_STATUS="b3 bench-step has no --device option (old build?)"
B3_BENCH_HELP="$("$BUILD_DIR/b3" bench-step --help 2>/dev/null)" || true
if [[ $B3_BENCH_HELP == *--device* ]]; then
  B3_BENCH_STATUS="failed (see $LOG_DIR/bench-b3.log)"
  : >"$LOG_DIR/bench-b3.log"
  for batch in "${BATCHES[@]}"; do
    echo "b3 bench-step --device cuda --amp --batch-size $batch --steps $BENCH_STEPS (timeout ${BENCH_TIMEOUT}s)"
    timeout "$BENCH_TIMEOUT" "$BUILD_DIR/b3" bench-step --device cuda --amp --optimizer adam \
      --model mobilenet_v3_large --image-size 224 --format nhwc --batch-size "$batch" \
      --warmup 5 --steps "$BENCH_STEPS" >>"$LOG_DIR/bench-b3.log" 2>&1 ||
      echo "b3 bench-step failed at batch $batch (status $?, 124: timed out)"
  done
  grep -E '^RESULT|images_per_second=' "$LOG_DIR/bench-b3.log"
  parse_results b3 <"$LOG_DIR/bench-b3.log"
else
  echo "b3: $B3_BENCH_STATUS"
fi

# The same step replayed as one CUDA graph (train/graphed_step.h), beside the
# eager step, at the first batch size only (it runs the step twice over).
section "Training benchmark, b3: the step as a CUDA graph, batch ${BATCHES[0]}" "$GRAPH_TIMEOUT"
if [[ $B3_BENCH_HELP == *--cuda-graph* ]]; then
  timeout "$GRAPH_TIMEOUT" "$BUILD_DIR/b3" bench-step --device cuda --amp --optimizer adam \
    --model mobilenet_v3_large --image-size 224 --format nhwc --batch-size "${BATCHES[0]}" \
    --warmup 3 --steps 10 --cuda-graph >"$LOG_DIR/bench-b3-graph.log" 2>&1 ||
    echo "b3 bench-step --cuda-graph failed (status $?, 124: timed out)"
  grep -E '^RESULT|^CUDA graph|error' "$LOG_DIR/bench-b3-graph.log"
else
  echo "b3 bench-step has no --cuda-graph option (old build?)"
fi

section "Training benchmark, PyTorch: the same settings" "$TORCH_TIMEOUT"
# One process (one import, one CUDA start) for every batch size; status 3: no
# torch/torchvision with CUDA.
TORCH_OK=0
if have "$PYTHON"; then
  echo "$PYTHON: torchvision mobilenet_v3_large, batch sizes ${BATCHES[*]} (timeout ${TORCH_TIMEOUT}s)"
  timeout "$TORCH_TIMEOUT" "$PYTHON" - "$BENCH_STEPS" "${BATCHES[@]}" >"$LOG_DIR/bench-torch.log" 2>&1 <<'EOF'
# torchvision's mobilenet_v3_large, channels_last, torch.autocast f16,
# cudnn.benchmark, Adam lr 5e-4 with a GradScaler: the reference settings.
import sys, time
try:
    import torch, torchvision
except ImportError as error:
    print(f"PyTorch comparison skipped: {error}")
    sys.exit(3)
if not torch.cuda.is_available():
    print("PyTorch comparison skipped: torch.cuda.is_available() is False")
    sys.exit(3)
print("PyTorch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN",
      torch.backends.cudnn.version(), flush=True)
torch.backends.cudnn.benchmark = True
device = torch.device("cuda")
steps = int(sys.argv[1])
for batch in [int(b) for b in sys.argv[2:]]:
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_large(num_classes=10)
    model = model.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    try:
        scaler = torch.amp.GradScaler("cuda")
    except (AttributeError, TypeError):
        scaler = torch.cuda.amp.GradScaler()
    images = torch.rand(batch, 3, 224, 224, device=device).to(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,), device=device)
    criterion = torch.nn.CrossEntropyLoss()
    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            loss = criterion(model(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    try:
        for _ in range(5):  # warm-up: cudnn.benchmark picks its algorithms here
            step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        print(f"batch={batch} images_per_second={batch * steps / seconds:.1f} "
              f"peak_memory_bytes={torch.cuda.max_memory_allocated()}", flush=True)
    except torch.cuda.OutOfMemoryError:
        print(f"batch={batch} out of memory", flush=True)
    del model, optimizer, images, labels
    torch.cuda.empty_cache()
EOF
  TORCH_STATUS=$?
  [ $TORCH_STATUS -eq 3 ] || TORCH_OK=1
  cat "$LOG_DIR/bench-torch.log"
  parse_results torch <"$LOG_DIR/bench-torch.log"
  [ $TORCH_STATUS -eq 0 ] || [ $TORCH_STATUS -eq 3 ] ||
    echo "PyTorch benchmark ended with status $TORCH_STATUS (124: timed out)"
else
  echo "PyTorch comparison skipped: no $PYTHON"
fi

gib() { awk -v b="$1" 'BEGIN { if (b ~ /^[0-9]+$/) printf "%.2f GiB", b / 1073741824; else print "?" }'; }
for batch in "${BATCHES[@]}"; do
  b3_part="b3: $B3_BENCH_STATUS"
  if [ -n "${B3_IPS[$batch]:-}" ]; then
    b3_part="b3 ${B3_IPS[$batch]} img/s, peak $(gib "${B3_MEM[$batch]}")"
  fi
  torch_part="PyTorch: n/a"
  if [ -n "${TORCH_IPS[$batch]:-}" ]; then
    torch_part="PyTorch ${TORCH_IPS[$batch]} img/s, peak $(gib "${TORCH_MEM[$batch]}")"
  elif [ $TORCH_OK -eq 1 ]; then
    torch_part="PyTorch: failed (see $LOG_DIR/bench-torch.log)"
  fi
  ratio=""
  if [ -n "${B3_IPS[$batch]:-}" ] && [ -n "${TORCH_IPS[$batch]:-}" ]; then
    ratio="; b3/PyTorch $(awk -v a="${B3_IPS[$batch]}" -v b="${TORCH_IPS[$batch]}" 'BEGIN { printf "%.2f", a / b }')"
  fi
  record "train batch $batch" "$b3_part; $torch_part$ratio"
done

if [ $TEST_STATUS -eq 0 ]; then finish 0; else finish 1; fi
