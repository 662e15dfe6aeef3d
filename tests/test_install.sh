#!/usr/bin/env bash
# tests/test_install.sh BUILD_DIR: b3 installed and used as a library.
#
#   a. `cmake --install BUILD_DIR --prefix P` into a temporary prefix: the
#      library, bin/b3 (which runs), the CMake package and the pkg-config
#      file are there; the kernels' private headers are not;
#   b. examples/train_step, a project of its own, configured with
#      find_package(b3) against P, built and run: it saves MobileNetV3-Small's
#      initial weights and trains a step, then loads them and trains the same
#      step, and both runs print the same losses;
#   c. every installed header compiles on its own (one translation unit
#      each, through b3::b3 only: no Eigen, no source tree on the path);
#   d. the same example built with g++ and `pkg-config --cflags --libs b3`
#      alone gives the same losses again.
#
# Prints one line per failed assertion; exit status 0 when all hold, else 1.
set -u

build=${1:?usage: tests/test_install.sh BUILD_DIR}
HERE="${BASH_SOURCE[0]%/*}"
[ "$HERE" != "${BASH_SOURCE[0]}" ] || HERE=.
ROOT="$(cd "$HERE/.." && pwd)"
build="$(cd "$build" && pwd)"
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/b3-install.XXXXXX")" || exit 1
trap 'rm -rf "$SCRATCH"' EXIT
prefix="$SCRATCH/prefix"
failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
run_logged() {  # run_logged NAME COMMAND...: output to $SCRATCH/NAME.log, shown on failure
  "${@:2}" > "$SCRATCH/$1.log" 2>&1
  local status=$?
  if [ "$status" -ne 0 ]; then
    fail "$1: '${*:2}' exited with status $status"
    tail -20 "$SCRATCH/$1.log"
    return 1
  fi
}

# a. the install
run_logged install cmake --install "$build" --prefix "$prefix" || exit 1
for file in lib/libb3.a bin/b3 lib/cmake/b3/b3Config.cmake lib/cmake/b3/b3ConfigVersion.cmake \
            lib/cmake/b3/b3Targets.cmake lib/pkgconfig/b3.pc include/b3/models/mobilenet_v3.h \
            include/b3/tensor/tensor.h include/b3/train/trainer.h; do
  [ -e "$prefix/$file" ] || fail "install: $file is missing"
done
for file in layers/conv2d_cpu.h layers/gemm_cpu.h tensor/elementwise_cpu.h data/stb_image_build.h; do
  [ ! -e "$prefix/include/b3/$file" ] || fail "install: the private header $file is installed"
done
"$prefix/bin/b3" --help > "$SCRATCH/help.log" 2>&1 || fail "install: bin/b3 --help failed"
grep -q "train" "$SCRATCH/help.log" || fail "install: bin/b3 --help does not list train"

# b. the example through find_package(b3)
example="$SCRATCH/example"
run_logged example-configure cmake -S "$ROOT/examples/train_step" -B "$example" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" &&
  run_logged example-build cmake --build "$example" -j 2 &&
  run_logged example-save "$example/train_step" --save "$SCRATCH/initial.safetensors" &&
  run_logged example-load "$example/train_step" --load "$SCRATCH/initial.safetensors"
losses() { grep '^loss before the step' "$SCRATCH/$1.log"; }
if [ -e "$SCRATCH/example-load.log" ]; then
  saved=$(losses example-save) loaded=$(losses example-load)
  [ -n "$saved" ] || fail "example: --save printed no losses"
  [ "$saved" = "$loaded" ] || fail "example: --save printed '$saved', --load '$loaded'"
  echo "example (find_package): $loaded"
fi

# c. each installed header on its own
headers="$SCRATCH/headers"
mkdir -p "$headers/src"
{
  echo "cmake_minimum_required(VERSION 3.24)"
  echo "project(b3_header_check LANGUAGES CXX)"
  echo "find_package(b3 REQUIRED)"
  echo "file(GLOB sources \${CMAKE_SOURCE_DIR}/src/*.cpp)"
  echo "add_library(headers OBJECT \${sources})"
  echo "target_link_libraries(headers PRIVATE b3::b3)"
  echo "target_compile_options(headers PRIVATE -fsyntax-only)"
} > "$headers/CMakeLists.txt"
count=0
while IFS= read -r header; do
  relative=${header#"$prefix/include/"}
  echo "#include <$relative>" > "$headers/src/$(echo "$relative" | tr '/.' '__').cpp"
  count=$((count + 1))
done < <(find "$prefix/include/b3" -name '*.h' | sort)
[ "$count" -gt 50 ] || fail "headers: only $count installed"
run_logged headers-configure cmake -S "$headers" -B "$headers/build" -DCMAKE_PREFIX_PATH="$prefix" &&
  run_logged headers-build cmake --build "$headers/build" -j 2 &&
  echo "headers: each of the $count installed headers compiles on its own"

# d. the example through pkg-config
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
if flags=$(pkg-config --cflags --libs b3 2> "$SCRATCH/pkg-config.log"); then
  # shellcheck disable=SC2086  # the flags are words
  run_logged pkg-config-build g++ -O2 "$ROOT/examples/train_step/train_step.cpp" $flags \
    -o "$SCRATCH/train_step_pc" &&
    run_logged pkg-config-load "$SCRATCH/train_step_pc" --load "$SCRATCH/initial.safetensors" &&
    { [ "$(losses pkg-config-load)" = "$(losses example-save)" ] ||
      fail "pkg-config: the example printed '$(losses pkg-config-load)'"; } &&
    echo "example (pkg-config): $(losses pkg-config-load)"
else
  fail "pkg-config --cflags --libs b3: $(cat "$SCRATCH/pkg-config.log")"
fi

[ "$failures" -eq 0 ] && echo "test_install: all passed" || echo "test_install: $failures failed"
[ "$failures" -eq 0 ]
