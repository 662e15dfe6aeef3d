#!/usr/bin/env bash
# Which memory allocator PyTorch's side of a speed comparison runs under.
#
# PyTorch's CPU tensors come from malloc, and PyTorch keeps no cache of its
# own on the CPU: with glibc's malloc every large activation is a fresh
# mmap, its pages faulted in on first touch and handed back at free. On a
# machine where a page fault is slow (a virtual machine can take ~10 us per
# 4 KiB page) that alone can make PyTorch's training step several times
# slower, while b3 reuses its blocks (tensor/host_block_arena.h). PyTorch's
# CPU performance guide recommends a caching allocator (TCMalloc or
# jemalloc) loaded with LD_PRELOAD; comparisons against b3 use one so that
# they measure the frameworks, not glibc's page faults.
#
# Source this file, then: pytorch_preload NAME  prints what LD_PRELOAD must
# hold for allocator NAME (tcmalloc, jemalloc, or glibc for none), or says
# what is missing on stderr and returns 1.

pytorch_preload() {
  local name=$1 dir=/usr/lib/x86_64-linux-gnu library
  case "$name" in
    glibc) return 0 ;;
    tcmalloc) library="$dir/libtcmalloc_minimal.so.4" ;;
    jemalloc) library="$dir/libjemalloc.so.2" ;;
    *)
      echo "pytorch allocator '$name' is not one of tcmalloc, jemalloc, glibc" >&2
      return 1
      ;;
  esac
  if [[ ! -e "$library" ]]; then
    echo "pytorch allocator '$name': $library is missing (scripts/setup.sh installs" \
      "libtcmalloc-minimal4; or choose glibc, knowing PyTorch then pays a page fault per" \
      "page of every large tensor)" >&2
    return 1
  fi
  echo "$library"
}
