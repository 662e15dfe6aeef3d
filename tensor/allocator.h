// Memory for tensor storage. Host memory is aligned to a chosen boundary, and
// may be deliberately misaligned by a byte offset for the alignment
// experiments; CUDA memory comes from the CUDA backend. The settings travel in
// AllocationOptions with each request: there is no global allocator state.
#pragma once

#include <cstddef>
#include <memory>

#include "tensor/device.h"

namespace b3 {

struct AllocationOptions {
  // Byte boundary the usable pointer starts from (a power of two). 64 on the
  // host is a cache line and an AVX-512 vector; 256 matches cudaMalloc.
  size_t alignment = 64;
  // Bytes added after the aligned boundary, so data starts deliberately
  // misaligned (0 = aligned). Must be below `alignment`.
  size_t misalignment = 0;
};

// The default alignment for a device: 64 bytes on the CPU, 256 on CUDA.
AllocationOptions default_allocation(const Device& device);

// A block of memory and how to give it back.
struct Allocation {
  void* data = nullptr;
  size_t nbytes = 0;
  std::shared_ptr<void> owner;  // releases the memory when the last user is gone
};

// Allocates `nbytes` on `device` with the given alignment and misalignment.
Allocation allocate(size_t nbytes, const Device& device, const AllocationOptions& options);

// The CUDA side, implemented in tensor/allocator_cuda.cpp or, in a CPU-only
// build, by tensor/no_cuda/cuda_stubs.cpp (which throws "built without CUDA").
Allocation allocate_cuda(size_t nbytes, int device_index, const AllocationOptions& options);
void copy_bytes_cuda(void* dst, const Device& dst_device, const void* src, const Device& src_device,
                     size_t nbytes);

}  // namespace b3
