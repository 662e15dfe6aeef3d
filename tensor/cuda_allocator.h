// The caching allocator for CUDA device memory, and its statistics.
//
// Why cache: cudaMalloc and cudaFree are slow (cudaFree synchronizes the whole
// device), and a training step frees and allocates the same activation sizes
// every iteration. So freed blocks stay with the allocator and are handed out
// again; the device only sees a cudaMalloc when no cached block fits.
//
// How (the scheme of PyTorch's CUDACachingAllocator, simplified):
//   - every request is rounded up to a multiple of 512 bytes (the buckets);
//   - requests of at most 1 MiB come from the small pool, whose segments
//     (one cudaMalloc each) are 2 MiB; larger requests come from the large
//     pool: below 10 MiB they share 20 MiB segments, from 10 MiB up each gets
//     its own segment rounded up to a multiple of 2 MiB;
//   - a request takes the smallest free block of its pool and stream that is
//     large enough (best fit; ties broken by address), splitting off the rest
//     when the rest is worth keeping (>= 512 B in the small pool, > 1 MiB in
//     the large one); a freed block merges with free neighbours of its segment;
//   - blocks belong to the stream they were allocated for and are only reused
//     for that stream. Freeing a block whose memory a kernel on that stream may
//     still be using is safe: any later user of the block is queued on the same
//     stream, behind that kernel. Memory used on another stream must be
//     synchronized with the allocating stream before the handle is released.
//   - when the device cannot give a segment of the preferred size, the
//     allocator asks for one just big enough for the request; if that fails
//     too, it gives every cached whole segment back (clear_cache) and tries
//     both once more; then it throws a runtime_error naming the bytes asked,
//     the bytes free on the device and its own active and reserved bytes.
// Because best fit with address tie-breaking is deterministic, once a
// training step has run without a device malloc, every later step that
// repeats the same sequence of requests gets the same addresses.
//
// Private pools, for CUDA graphs (tensor/cuda_graph.h): a captured graph
// replays its kernels on the addresses they had at capture, so that memory
// must stay the graph's for as long as the graph exists. Between
// begin_private_pool(stream) and end_private_pool(stream) every request for
// that stream comes from a pool of its own (its own segments; blocks freed
// during capture are reused within it, in the same order at every replay),
// and a shared block freed during the capture joins the pool too (the graph
// may read it at replay). Nothing outside the pool ever gets its memory, and
// clear_cache() leaves it alone, until release_private_pool() hands all of
// it, live blocks included, back to the shared cache.
//
// The allocator itself is plain C++: it asks a MemorySource for segments, so
// its bookkeeping is tested on the CPU with a host-memory source
// (tests/test_cuda_allocator.cpp); the CUDA source (cudaMalloc/cudaFree) lives
// in tensor/cuda_context.cpp, where each device's allocator is created.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "tensor/allocator.h"
#include "tensor/cuda_stream.h"

namespace b3::cuda {

struct MemoryStats {
  size_t requested_bytes = 0;      // bytes asked for by the live allocations
  size_t active_bytes = 0;         // bytes of the blocks handed out (rounded sizes)
  size_t peak_active_bytes = 0;    // most active_bytes since creation or reset_peak()
  size_t reserved_bytes = 0;       // bytes of all segments held (active + cached)
  size_t peak_reserved_bytes = 0;  // most reserved_bytes since creation or reset_peak()
  size_t active_blocks = 0;        // blocks handed out now
  size_t cached_blocks = 0;        // free blocks kept for reuse
  size_t segments = 0;             // segments held (one device malloc each)
  uint64_t allocations = 0;        // allocate() calls that succeeded
  uint64_t cache_hits = 0;         // ... of which were served without a device malloc
  uint64_t device_mallocs = 0;     // segments obtained from the device
  uint64_t device_frees = 0;       // segments given back to the device
  uint64_t oom_retries = 0;        // device mallocs retried after clearing the cache

  // One line: "active 1.5 MiB (peak 2.0 MiB), reserved 22.0 MiB (peak ...), ...".
  std::string str() const;
};

// Where the allocator's segments come from: cudaMalloc/cudaFree for a device,
// host memory in the allocator's own tests.
class MemorySource {
 public:
  virtual ~MemorySource() = default;
  // A segment of exactly `nbytes`, or nullptr when the device is out of
  // memory; any other failure throws.
  virtual void* allocate(size_t nbytes) = 0;
  // Gives a segment back (never throws; a failure is reported and ignored,
  // because it happens while memory is being released).
  virtual void release(void* segment, size_t nbytes) noexcept = 0;
  // {free bytes, total bytes} of the device, for out-of-memory messages.
  virtual std::pair<size_t, size_t> memory_info() = 0;
  // Every segment starts at a multiple of this (cudaMalloc: 256).
  virtual size_t base_alignment() const = 0;
  // The device, for messages: "cuda:0".
  virtual std::string name() const = 0;
};

class CachingAllocator {
 public:
  static constexpr size_t kBlockRounding = 512;             // request sizes round up to this
  static constexpr size_t kSmallRequest = 1u << 20;         // <= 1 MiB: the small pool
  static constexpr size_t kSmallSegment = 2u << 20;         // the small pool's segment size
  static constexpr size_t kLargeSharedLimit = 10u << 20;    // large requests below this share...
  static constexpr size_t kLargeSharedSegment = 20u << 20;  // ...20 MiB segments
  static constexpr size_t kLargeRounding = 2u << 20;        // bigger ones: own segment, 2 MiB steps

  explicit CachingAllocator(std::unique_ptr<MemorySource> source);
  // Gives every segment back. Allocations still alive keep the bookkeeping
  // (and their segments) alive until they are released, so destroying the
  // allocator first is safe.
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // At least `nbytes` usable bytes at a pointer aligned to options.alignment
  // plus options.misalignment (see tensor/allocator.h), for work on `stream`.
  // The Allocation's owner returns the block to the cache when the last
  // handle to it is gone. Throws std::invalid_argument for bad options and
  // std::runtime_error when the device is out of memory.
  Allocation allocate(size_t nbytes, const AllocationOptions& options, StreamHandle stream);

  MemoryStats stats() const;
  // Sets the peaks to the current values (PyTorch's reset_peak_memory_stats).
  void reset_peak();
  // Gives every cached segment that holds no live block back to the device.
  // cudaFree synchronizes the device: do not call this inside a training step.
  void clear_cache();

  // Private pools (see above). begin returns the new pool's id; it throws
  // std::logic_error when `stream` already allocates from one, and end when
  // it does not; release throws for an unknown pool or one still routed.
  uint64_t begin_private_pool(StreamHandle stream);
  void end_private_pool(StreamHandle stream);
  void release_private_pool(uint64_t pool);

  struct State;  // the bookkeeping, shared with the owners of live allocations

 private:
  std::shared_ptr<State> state_;
};

// The statistics and cache control of one device's allocator (the one in its
// CudaContext). All three throw "built without CUDA" in a CPU-only build.
B3_CUDA_LAUNCHER(MemoryStats memory_stats(int device));
B3_CUDA_LAUNCHER(void reset_peak_memory(int device));
B3_CUDA_LAUNCHER(void clear_cache(int device));

}  // namespace b3::cuda
