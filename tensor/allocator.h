// Memory for tensor storage. Host memory is aligned to a chosen boundary, and
// may be deliberately misaligned by a byte offset for the alignment
// experiments; CUDA memory comes from the CUDA backend. The settings travel in
// AllocationOptions with each request.
//
// Host memory goes through a caching allocator: a training step frees and
// allocates the same activation sizes every iteration, and handing a fresh
// block from the system each time costs a page fault per 4 KiB page touched
// (plus the kernel zeroing it). So a freed block is kept and handed out
// again. Requests under 1 MiB round up to 1/8 of their power of two (at
// most 12.5% slack), larger ones to 64 KiB. Blocks under 1 MiB are kept by
// (alignment, rounded size) and serve the next request of that size, or of
// a size down to half theirs when that one has none free. Blocks of 1 MiB
// and more (alignment up to 64 KiB) come from a pool of segments of at
// least 64 MiB (tensor/host_block_arena.h): the best-fitting free range, its
// tail split off, neighbours merged on return, so that a freed large block
// also serves smaller requests. Segments are whole 2 MiB pages, start on a
// 2 MiB boundary and ask for transparent huge pages (fewer TLB misses when a
// step streams through its activations); pool blocks start on a 64 KiB
// boundary (more than was asked). The cache is the one piece of
// process-wide state here (as in every framework's allocator); it is
// thread-safe, and its statistics (active, peak, reserved) are below.
// Set the environment variable B3_HOST_CACHE=0 to allocate from the system
// every time (for valgrind or sanitizers).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "tensor/device.h"
#include "tensor/source_location.h"

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

// The host caching allocator's statistics, in bytes of rounded blocks.
struct HostMemoryStats {
  size_t active_bytes = 0;         // blocks handed out now
  size_t peak_active_bytes = 0;    // most active_bytes since start or reset_host_memory_peak()
  size_t reserved_bytes = 0;       // active + cached (what the process holds)
  size_t peak_reserved_bytes = 0;  // most reserved_bytes since start or the reset
  uint64_t allocations = 0;        // requests served
  uint64_t cache_hits = 0;         // ... of which from the cache
};
HostMemoryStats host_memory_stats();
// Sets the peaks to the current values.
void reset_host_memory_peak();
// Gives every cached (free) host block back to the system.
void release_cached_host_memory();

// The CUDA side, implemented in tensor/allocator_cuda.cpp or, in a CPU-only
// build, by tensor/no_cuda/cuda_stubs.cpp (which throws "built without CUDA").
Allocation allocate_cuda(size_t nbytes, int device_index, const AllocationOptions& options);
// A copy that touches host memory waits for the device and counts as a host
// wait there (tensor/cuda_stream.h's host_wait_count), reported at `caller`.
void copy_bytes_cuda(void* dst, const Device& dst_device, const void* src, const Device& src_device,
                     size_t nbytes, SourceLocation caller = SourceLocation::current());

}  // namespace b3
