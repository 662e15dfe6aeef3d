#!/usr/bin/env bash
# scripts/gpu_check.sh: one command for any machine with an NVIDIA GPU.
#
#   1. prints the GPU, driver, CUDA, cuDNN and cuBLAS versions;
#   2. finds cuDNN and cuBLAS where a PyTorch pip install keeps them
#      (site-packages/nvidia/{cudnn,cublas}) when the loader cannot;
#   3. builds b3 with CUDA for this GPU if needed (build-gpu/);
#   4. runs the CUDA test suites (ctest -R cuda);
#   5. trains MobileNetV3-Large at 224x224, mixed precision, on synthetic
#      data at batch 128 and 512, with b3 and with PyTorch, and prints
#      images/s, peak memory and the ratio;
#   6. ends with a summary table.
# Budget: under 6 minutes: the phases' timeouts (build 180 s, tests 90 s, 45 s
# per benchmarked framework) add up to 360 s; a build that exists costs ~0.
# Exit status: 0 when the build and every CUDA test passed, 1 otherwise, 2
# when there is no NVIDIA GPU.
#
# Settings (environment): B3_GPU_BUILD_DIR (build-gpu), JOBS (nproc),
# B3_PYTHON (python3), B3_GPU_BENCH_STEPS (20), B3_GPU_BATCHES ("128 512"),
# B3_GPU_BUILD_TIMEOUT (180 s), B3_GPU_TEST_TIMEOUT (90 s),
# B3_GPU_BENCH_TIMEOUT (45 s per framework).
# Full logs of every phase: <build dir>/gpu_check/. To pin an asynchronous
# CUDA error to the kernel that caused it, rerun with CUDA_LAUNCH_BLOCKING=1.
set -u
set -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${B3_GPU_BUILD_DIR:-$ROOT/build-gpu}"
LOG_DIR="$BUILD_DIR/gpu_check"  # every phase's full log
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 4)}"
PYTHON="${B3_PYTHON:-python3}"
BENCH_STEPS="${B3_GPU_BENCH_STEPS:-20}"
BATCHES="${B3_GPU_BATCHES:-128 512}"
BUILD_TIMEOUT="${B3_GPU_BUILD_TIMEOUT:-180}"
TEST_TIMEOUT="${B3_GPU_TEST_TIMEOUT:-90}"
BENCH_TIMEOUT="${B3_GPU_BENCH_TIMEOUT:-45}"
START_SECONDS=$SECONDS

SUMMARY_KEYS=()
SUMMARY_VALUES=()
record() {  # record <item> <result...>
  SUMMARY_KEYS+=("$1")
  shift
  SUMMARY_VALUES+=("$*")
}
section() { printf '\n==== %s  (%ds)\n' "$*" $((SECONDS - START_SECONDS)); }
have() { command -v "$1" >/dev/null 2>&1; }

print_summary() {
  section "Summary"
  local width=24 i
  printf '%-*s | %s\n' "$width" "item" "result"
  printf '%s\n' "-------------------------+------------------------------------------------------"
  for i in ${SUMMARY_KEYS[@]+"${!SUMMARY_KEYS[@]}"}; do
    printf '%-*s | %s\n' "$width" "${SUMMARY_KEYS[$i]}" "${SUMMARY_VALUES[$i]}"
  done
  printf 'total time: %ds\n' $((SECONDS - START_SECONDS))
}

finish() {  # finish <exit status>
  print_summary
  exit "$1"
}

# ----------------------------------------------------------------- GPU ---
section "GPU and driver"
if ! have nvidia-smi; then
  echo "nvidia-smi not found: this machine has no NVIDIA driver (or it is not on PATH)."
  record "GPU" "none (no nvidia-smi)"
  finish 2
fi
if ! GPU_LINES="$(nvidia-smi --query-gpu=index,name,driver_version,memory.total,clocks.max.sm \
  --format=csv,noheader 2>&1)"; then
  echo "nvidia-smi failed: $GPU_LINES"
  record "GPU" "none (nvidia-smi failed)"
  finish 2
fi
echo "$GPU_LINES"
# Outputs are captured first and parsed in bash: no pipeline into a reader
# that stops early (head, grep -q), which under pipefail fails with SIGPIPE.
DRIVER_CUDA=""
SMI_HEADER="$(nvidia-smi 2>/dev/null)" || true
[[ $SMI_HEADER =~ CUDA\ Version:\ *([0-9]+\.[0-9]+) ]] && DRIVER_CUDA="${BASH_REMATCH[1]}"
IFS=, read -r _ GPU_NAME DRIVER_VERSION _ <<<"$GPU_LINES"
GPU_COUNT=0
while IFS= read -r _; do GPU_COUNT=$((GPU_COUNT + 1)); done <<<"$GPU_LINES"
record "GPU" "${GPU_NAME# } ($GPU_COUNT device(s))"
record "driver" "${DRIVER_VERSION# }, supports CUDA ${DRIVER_CUDA:-?}"

# -------------------------------------------------------------- toolkit ---
section "CUDA toolkit"
NVCC=""
if have nvcc; then NVCC="$(command -v nvcc)"; elif [ -x /usr/local/cuda/bin/nvcc ]; then NVCC=/usr/local/cuda/bin/nvcc; fi
if [ -n "$NVCC" ]; then
  NVCC_VERSION=""
  NVCC_OUTPUT="$("$NVCC" --version 2>&1)" || true
  [[ $NVCC_OUTPUT =~ release\ ([0-9]+\.[0-9]+) ]] && NVCC_VERSION="${BASH_REMATCH[1]}"
  echo "nvcc: $NVCC (CUDA $NVCC_VERSION)"
  record "CUDA toolkit" "$NVCC_VERSION ($NVCC)"
else
  echo "nvcc not found: b3 can only be built with the CUDA toolkit (apt install nvidia-cuda-toolkit, or NVIDIA's packages)."
  record "CUDA toolkit" "missing"
fi
CUDA_HOME_GUESS="$(dirname "$(dirname "${NVCC:-/usr/local/cuda/bin/nvcc}")")"

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
loader_has() {  # loader_has <library file name>: the loader, LD_LIBRARY_PATH or the toolkit has it
  # ldconfig -p lines: "<tab>libcudnn.so.9 (libc6,x86-64) => /path/libcudnn.so.9"
  [[ $LOADER_CACHE == *[[:space:]]"$1"[[:space:].]* ]] && return 0
  local dir path
  local -a dirs
  IFS=: read -r -a dirs <<<"${LD_LIBRARY_PATH:-}"
  for dir in ${dirs[@]+"${dirs[@]}"} "$CUDA_HOME_GUESS/lib64" "$CUDA_HOME_GUESS/lib"; do
    for path in "$dir/$1" "$dir/$1".*; do
      [ -e "$path" ] && return 0
    done
  done
  return 1
}
pip_package_dir() {  # pip_package_dir <nvidia subpackage>: the pip wheel's directory, if any
  have "$PYTHON" || return 1
  "$PYTHON" -c "import nvidia.$1 as m; print(list(m.__path__)[0])" 2>/dev/null
}
CMAKE_EXTRA=()
check_libraries() {  # prints where cuDNN and cuBLAS come from; status 0 when both are found
  local lib soname dir missing=0
  local -a libraries
  read_loader_cache
  for lib in cudnn cublas; do
    soname="lib$lib.so"
    if loader_has "$soname"; then
      echo "$soname: found by the loader"
      continue
    fi
    if dir="$(pip_package_dir "$lib")" && [ -d "$dir/lib" ]; then
      export LD_LIBRARY_PATH="$dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      echo "$soname: not on the loader path; using the PyTorch pip copy in $dir/lib"
      if [ "$lib" = cudnn ] && [ -f "$dir/include/cudnn.h" ]; then
        libraries=("$dir"/lib/libcudnn.so*)  # pip wheels hold only libcudnn.so.9
        CMAKE_EXTRA+=("-DCUDNN_INCLUDE_DIR=$dir/include" "-DCUDNN_LIBRARY=${libraries[0]}")
      fi
    else
      echo "$soname: not found (neither on the loader path nor in a pip install of PyTorch)"
      missing=1
    fi
  done
  return "$missing"
}
section "cuDNN and cuBLAS"
check_libraries
# The versions the loader actually gives us, asked from the libraries.
LIB_VERSIONS="$("$PYTHON" - 2>/dev/null <<'EOF'
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
CUDNN_VERSION="$(echo "$LIB_VERSIONS" | grep '^cudnn=' | cut -d= -f2)"
CUBLAS_VERSION="$(echo "$LIB_VERSIONS" | grep '^cublas=' | cut -d= -f2)"
echo "cuDNN (loaded): ${CUDNN_VERSION:-unknown (no $PYTHON to ask)}"
echo "cuBLAS (loaded): ${CUBLAS_VERSION:-unknown (no $PYTHON to ask)}"
record "cuDNN" "${CUDNN_VERSION:-unknown}"
record "cuBLAS" "${CUBLAS_VERSION:-unknown}"

# ---------------------------------------------------------------- build ---
section "Build ($BUILD_DIR)"
mkdir -p "$LOG_DIR"
CUDA_TEST_TARGETS=()
for source in "$ROOT"/tests/test_cuda_*.cpp; do
  [ -e "$source" ] && CUDA_TEST_TARGETS+=("$(basename "$source" .cpp)")
done
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  echo "configuring for this GPU (CMAKE_CUDA_ARCHITECTURES=native)"
  if ! cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DB3_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=native ${CMAKE_EXTRA[@]+"${CMAKE_EXTRA[@]}"} >"$LOG_DIR/configure.log" 2>&1; then
    tail -n 30 "$LOG_DIR/configure.log"
    echo "configure failed (full log: $LOG_DIR/configure.log)"
    record "build" "FAILED at configure"
    finish 1
  fi
fi
echo "building b3 and ${#CUDA_TEST_TARGETS[@]} CUDA test suites with $JOBS jobs (timeout ${BUILD_TIMEOUT}s)"
if ! timeout "$BUILD_TIMEOUT" cmake --build "$BUILD_DIR" -j "$JOBS" --target b3 \
  ${CUDA_TEST_TARGETS[@]+"${CUDA_TEST_TARGETS[@]}"} >"$LOG_DIR/build.log" 2>&1; then
  grep -E 'error|Error' "$LOG_DIR/build.log" | head -n 20
  tail -n 20 "$LOG_DIR/build.log"
  echo "build failed or timed out (full log: $LOG_DIR/build.log)"
  record "build" "FAILED (see $LOG_DIR/build.log)"
  finish 1
fi
WARNINGS="$(grep -c 'warning' "$LOG_DIR/build.log" || true)"
record "build" "ok ($WARNINGS warning lines)"

# ---------------------------------------------------------------- tests ---
section "CUDA tests (ctest -R cuda)"
TEST_LOG="$LOG_DIR/cuda-tests.log"
timeout "$TEST_TIMEOUT" ctest --test-dir "$BUILD_DIR" -R cuda --output-on-failure -j 4 \
  >"$TEST_LOG" 2>&1
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
section "Training benchmark: MobileNetV3-Large, 224x224, mixed precision, synthetic data"
declare -A B3_IPS B3_MEM TORCH_IPS TORCH_MEM
parse_results() {  # parse_results <b3|torch> < lines
  local line batch ips mem
  while read -r line; do
    batch="$(echo "$line" | grep -o 'batch=[0-9]*' | head -n1 | cut -d= -f2)"
    ips="$(echo "$line" | grep -oE '(img_per_s|images_per_second)=[0-9.]*' | head -n1 | cut -d= -f2)"
    mem="$(echo "$line" | grep -oE '(peak_gpu_bytes|peak_memory_bytes)=[0-9]*' | head -n1 | cut -d= -f2)"
    if [ -z "$batch" ] || [ -z "$ips" ]; then continue; fi
    if [ "$1" = b3 ]; then B3_IPS[$batch]="$ips"; B3_MEM[$batch]="${mem:-?}"; fi
    if [ "$1" = torch ]; then TORCH_IPS[$batch]="$ips"; TORCH_MEM[$batch]="${mem:-?}"; fi
  done
}

# `b3 bench-step --device cuda --amp` times forward + backward + Adam with the
# production kernels (autocast f16, dynamic loss scaling, channels_last), with
# the same settings as the PyTorch script below; its RESULT line carries
# batch=, img_per_s= and peak_gpu_bytes= (the caching allocator's peak in use).
B3_BENCH_STATUS="b3 bench-step has no --device option (old build?)"
B3_BENCH_HELP="$("$BUILD_DIR/b3" bench-step --help 2>/dev/null)" || true
if [[ $B3_BENCH_HELP == *--device* ]]; then
  B3_BENCH_STATUS="failed (see $LOG_DIR/bench-b3.log)"
  : >"$LOG_DIR/bench-b3.log"
  per_batch=$((BENCH_TIMEOUT / $(echo "$BATCHES" | wc -w)))
  for batch in $BATCHES; do
    echo "b3 bench-step --device cuda --amp --batch-size $batch --steps $BENCH_STEPS"
    timeout "$per_batch" "$BUILD_DIR/b3" bench-step --device cuda --amp --optimizer adam \
      --model mobilenet_v3_large --image-size 224 --format nhwc --batch-size "$batch" \
      --warmup 5 --steps "$BENCH_STEPS" >>"$LOG_DIR/bench-b3.log" 2>&1 ||
      echo "b3 bench-step failed at batch $batch (status $?, 124: timed out)"
  done
  grep -E '^RESULT|images_per_second=' "$LOG_DIR/bench-b3.log"
  parse_results b3 <"$LOG_DIR/bench-b3.log"
else
  echo "b3: $B3_BENCH_STATUS"
fi

TORCH_OK=0
if have "$PYTHON" && "$PYTHON" -c 'import torch, torchvision; assert torch.cuda.is_available()' \
  >/dev/null 2>&1; then
  TORCH_OK=1
  "$PYTHON" -c 'import torch; print("PyTorch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version())'
  timeout "$BENCH_TIMEOUT" "$PYTHON" - "$BENCH_STEPS" $BATCHES >"$LOG_DIR/bench-torch.log" 2>&1 <<'EOF'
# torchvision's mobilenet_v3_large, channels_last, torch.autocast f16,
# cudnn.benchmark, Adam lr 5e-4 with a GradScaler: the reference settings.
import sys, time
import torch, torchvision
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
  cat "$LOG_DIR/bench-torch.log"
  parse_results torch < "$LOG_DIR/bench-torch.log"
  [ $TORCH_STATUS -eq 0 ] || echo "PyTorch benchmark ended with status $TORCH_STATUS (124: timed out)"
else
  echo "PyTorch comparison skipped: $PYTHON cannot import torch and torchvision with CUDA"
fi

gib() { awk -v b="$1" 'BEGIN { if (b ~ /^[0-9]+$/) printf "%.2f GiB", b / 1073741824; else print "?" }'; }
for batch in $BATCHES; do
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
