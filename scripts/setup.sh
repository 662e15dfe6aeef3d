#!/usr/bin/env bash
# Installs what b3 needs from Debian's packages, only what is missing.
#   scripts/setup.sh          install the missing packages (as root, or through sudo)
#   scripts/setup.sh --check  list what is missing; exit 1 if anything is
set -euo pipefail

# "package: file that proves it is installed"
requirements=(
  "cmake:/usr/bin/cmake"
  "g++:/usr/bin/g++"
  "make:/usr/bin/make"
  # tests/test_install.sh builds a program against b3's pkg-config file
  "pkg-config:/usr/bin/pkg-config"
  "libeigen3-dev:/usr/include/eigen3/Eigen/Core"
  "doctest-dev:/usr/include/doctest/doctest.h"
  "libcli11-dev:/usr/include/CLI/CLI.hpp"
  "nlohmann-json3-dev:/usr/include/nlohmann/json.hpp"
  "libstb-dev:/usr/include/stb/stb_image.h"
  "python3-torch:/usr/lib/python3/dist-packages/torch/__init__.py"
  "python3-torchvision:/usr/lib/python3/dist-packages/torchvision/__init__.py"
  # PyTorch's side of the speed comparisons (experiment/compare_cpu.sh): the
  # BLAS its package recommends (without it, netlib's reference BLAS) and the
  # caching malloc its CPU guide recommends (experiment/pytorch_allocator.sh)
  "libopenblas0-pthread:/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"
  "libtcmalloc-minimal4:/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
  "gnuplot-nox:/usr/bin/gnuplot"
  "openmpi-bin:/usr/bin/mpirun"
  "libopenmpi-dev:/usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h"
  # make test-sanitize, make fuzz, make test-tsan: clang with libFuzzer, its
  # OpenMP (with Archer, which lets ThreadSanitizer see OpenMP's barriers)
  "clang-14:/usr/bin/clang++-14"
  "libfuzzer-14-dev:/usr/lib/llvm-14/lib/libFuzzer.a"
  "libomp-14-dev:/usr/lib/llvm-14/lib/libarcher.so"
)

missing=()
for entry in "${requirements[@]}"; do
  package=${entry%%:*}
  file=${entry#*:}
  [ -e "$file" ] || missing+=("$package")
done

if [ "${1:-}" = "--check" ]; then
  if [ ${#missing[@]} -eq 0 ]; then
    echo "setup: everything b3 needs is installed"
    exit 0
  fi
  echo "setup: missing Debian packages: ${missing[*]}"
  exit 1
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: everything b3 needs is installed"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  sudo_cmd=()
elif command -v sudo >/dev/null 2>&1; then
  sudo_cmd=(sudo)
else
  echo "setup: missing ${missing[*]}; run this script as root or install sudo" >&2
  exit 1
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
