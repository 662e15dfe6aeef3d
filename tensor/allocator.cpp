// Aligned host allocation (with optional deliberate misalignment) through a
// caching allocator (size buckets for small blocks, a segment pool for large
// ones), and the dispatch of device allocations to the CUDA backend.
#include "tensor/allocator.h"

#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "tensor/host_block_arena.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define B3_ADDRESS_SANITIZER 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(B3_ADDRESS_SANITIZER)
#define B3_ADDRESS_SANITIZER 1
#endif
#if defined(B3_ADDRESS_SANITIZER)
#include <sanitizer/asan_interface.h>
#endif

namespace b3 {

AllocationOptions default_allocation(const Device& device) {
  AllocationOptions options;
  options.alignment = device.is_cpu() ? 64 : 256;
  return options;
}

static void check_options(const AllocationOptions& options) {
  const size_t a = options.alignment;
  if (a == 0 || (a & (a - 1)) != 0 || a < alignof(std::max_align_t) / 2) {
    throw std::invalid_argument("allocate: alignment " + std::to_string(a) +
                                " must be a power of two of at least 8 bytes");
  }
  if (options.misalignment >= a) {
    throw std::invalid_argument("allocate: misalignment " + std::to_string(options.misalignment) +
                                " must be smaller than the alignment " + std::to_string(a));
  }
}

namespace {

// Under AddressSanitizer the pool's free ranges are marked unaddressable, so
// that a read or write past a pool block into its neighbour (or into a freed
// one) is reported as it would be between separate allocations. No-ops in
// other builds.
void mark_unaddressable([[maybe_unused]] void* block, [[maybe_unused]] size_t bytes) {
#if defined(B3_ADDRESS_SANITIZER)
  ASAN_POISON_MEMORY_REGION(block, bytes);
#endif
}
void mark_addressable([[maybe_unused]] void* block, [[maybe_unused]] size_t bytes) {
#if defined(B3_ADDRESS_SANITIZER)
  ASAN_UNPOISON_MEMORY_REGION(block, bytes);
#endif
}

// Blocks of at least this size start on a 2 MiB boundary and ask the kernel
// for transparent huge pages (madvise; the machines here have THP in
// "madvise" mode): a step streams through ~1 GB of activations at 224x224,
// and with 4 KiB pages every 4 KiB costs a page walk (the TLB covers 6 MiB),
// with 2 MiB pages the TLB covers gigabytes.
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kHugeBlock = size_t{8} << 20;
// Blocks of at least kArenaBlock come from the segment pool
// (HostBlockArena), carved in multiples of kArenaGranule (every bucket from
// 1 MiB up is one: bucket_bytes).
constexpr size_t kArenaBlock = size_t{1} << 20;
constexpr size_t kArenaGranule = size_t{64} << 10;

// A block from the system: aligned_alloc, on a huge-page boundary with the
// huge-page advice for big blocks. Null when out of memory.
// From kHugeBlock up, a pool segment is whole huge pages (segment_bytes);
// a block outside the pool (cache off) may end inside its last one.
void* system_alloc(size_t alignment, size_t bytes) {
  if (bytes < kHugeBlock) return std::aligned_alloc(alignment, bytes);
  void* block = std::aligned_alloc(std::max(alignment, kHugePage), bytes);
#if defined(MADV_HUGEPAGE)
  if (block != nullptr) madvise(block, bytes, MADV_HUGEPAGE);  // advice only: errors ignored
#endif
  return block;
}

// The bucket of a request of `bytes`: up to 512 bytes, the next multiple of
// 64; above, the next multiple of 1/8 of the largest power of two not above
// it (1024 -> 1024, 1025 -> 1152, 9000 -> 9216): at most 12.5% slack, and
// eight buckets per doubling, so steps of a few sizes share few buckets.
// From 1 MiB up, where blocks come from the pool, the next multiple of its
// granule: the pool fits any size into a free range and gives the rest of
// the range back, so a coarser bucket would only be slack held by a live
// tensor (~6% of the 224x224 step's activations with the 1/8 buckets).
size_t bucket_bytes(size_t bytes) {
  if (bytes <= 512) return std::max<size_t>(64, (bytes + 63) / 64 * 64);
  if (bytes >= kArenaBlock) return (bytes + kArenaGranule - 1) / kArenaGranule * kArenaGranule;
  const size_t step = std::bit_floor(bytes) / 8;
  return (bytes + step - 1) / step * step;
}

// The size of a new pool segment for a first block of `bytes`: at least
// kMinimumSegment, whole huge pages (the rest is a free range for the next
// requests). Segments the size of each first request fragment: blocks never
// merge across segments, so a step's freed temporaries stay in pieces too
// small for what comes next (224x224 training: 872 MiB held for 762 MiB of
// tensors with such segments, 814 MiB with 64 MiB ones; 256 MiB ones do no
// better). Address space only: pages the tensors never touched are not
// resident.
constexpr size_t kMinimumSegment = size_t{64} << 20;
size_t segment_bytes(size_t bytes) {
  bytes = std::max(bytes, kMinimumSegment);
  return bytes >= kHugeBlock ? (bytes + kHugePage - 1) / kHugePage * kHugePage : bytes;
}

// Free blocks by (alignment, bucket bytes), and the statistics. One instance
// for the process, never destroyed: tensors that outlive main() (statics)
// still give their blocks back to it safely.
class HostCache {
 public:
  static HostCache& instance() {
    static HostCache* cache = new HostCache();
    return *cache;
  }

  // A block of at least `bucket` bytes aligned to `alignment`, from the cache
  // or the system; *block_bytes receives its size (its own bucket). Large
  // blocks come from the pool (take_large). When a small block's
  // bucket has no free block, the smallest cached one of up to twice the size
  // serves: during backward the requests grow (from the last layers' small
  // gradients to the first layers' large ones), and without this a freed
  // block could only serve its own bucket again, so the process would hold
  // ~25% more memory than it uses (measured on MobileNetV3 at 224x224).
  void* take(size_t alignment, size_t bucket, size_t* block_bytes) {
    if (in_arena(alignment, bucket)) return take_large(bucket, block_bytes);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++stats_.allocations;
      if (enabled_) {
        for (auto it = free_.lower_bound({alignment, bucket});
             it != free_.end() && it->first.first == alignment && it->first.second <= 2 * bucket;
             ++it) {
          if (it->second.empty()) continue;
          void* block = it->second.back();
          it->second.pop_back();
          *block_bytes = it->first.second;
          cached_bytes_ -= *block_bytes;
          add_active(*block_bytes);
          ++stats_.cache_hits;
          return block;
        }
      }
      *block_bytes = bucket;
      add_active(bucket);
      stats_.reserved_bytes += bucket;
      stats_.peak_reserved_bytes = std::max(stats_.peak_reserved_bytes, stats_.reserved_bytes);
    }
    void* block = system_alloc_or_release(alignment, bucket);
    if (block == nullptr) {
      std::lock_guard<std::mutex> lock(mutex_);
      stats_.active_bytes -= bucket;
      stats_.reserved_bytes -= bucket;
      throw out_of_memory(bucket);
    }
    return block;
  }

  void give_back(void* block, size_t alignment, size_t bucket) noexcept {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stats_.active_bytes -= bucket;
      if (in_arena(alignment, bucket)) {
        try {
          arena_.give_back(block);
          mark_unaddressable(block, bucket);
        } catch (...) {  // no memory for the bookkeeping: the block stays unusable, not unsafe
        }
        return;
      }
      if (enabled_) {
        try {
          free_[{alignment, bucket}].push_back(block);
          cached_bytes_ += bucket;
          return;
        } catch (...) {  // no memory for the bookkeeping: free the block instead
        }
      }
      stats_.reserved_bytes -= bucket;
    }
    std::free(block);
  }

  void release_cached() {
    std::map<std::pair<size_t, size_t>, std::vector<void*>> blocks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(free_);
      stats_.reserved_bytes -= cached_bytes_;
      cached_bytes_ = 0;
    }
    for (auto& [key, list] : blocks)
      for (void* block : list) std::free(block);
    std::vector<std::pair<void*, size_t>> segments;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      segments = arena_.release_free_segments();
      for (const auto& segment : segments) stats_.reserved_bytes -= segment.second;
    }
    for (const auto& segment : segments) {
      mark_addressable(segment.first, segment.second);
      std::free(segment.first);
    }
  }

  HostMemoryStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

  void reset_peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.peak_active_bytes = stats_.active_bytes;
    stats_.peak_reserved_bytes = stats_.reserved_bytes;
  }

 private:
  HostCache() {
    const char* setting = std::getenv("B3_HOST_CACHE");
    enabled_ = setting == nullptr || std::string(setting) != "0";
  }

  // A block from the system; when it has none, the cache is given back and
  // the system asked once more. Null when that fails too.
  void* system_alloc_or_release(size_t alignment, size_t bytes) {
    if (void* block = system_alloc(alignment, bytes)) return block;
    release_cached();
    return system_alloc(alignment, bytes);
  }

  // The error for a request the system could not serve (under mutex_).
  std::runtime_error out_of_memory(size_t bytes) const {
    return std::runtime_error("allocate: out of host memory asking for " + std::to_string(bytes) +
                              " bytes (" + std::to_string(stats_.active_bytes) +
                              " bytes in use by tensors)");
  }

  // Large blocks come from the pool (best fit, split and merge over
  // segments: tensor/host_block_arena.h) rather than the per-size lists:
  // with the cache on, for an alignment the pool's granule satisfies.
  bool in_arena(size_t alignment, size_t bucket) const {
    return enabled_ && bucket >= kArenaBlock && alignment <= kArenaGranule;
  }

  void* take_large(size_t bucket, size_t* block_bytes) {
    *block_bytes = bucket;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++stats_.allocations;
      if (void* block = arena_.take(bucket)) {
        mark_addressable(block, bucket);
        ++stats_.cache_hits;
        add_active(bucket);
        return block;
      }
    }
    // Nothing free fits: a new segment the size of the request (in whole
    // huge pages when large; the rest stays free for later requests).
    const size_t segment_size = segment_bytes(bucket);
    void* segment = system_alloc_or_release(kArenaGranule, segment_size);
    std::lock_guard<std::mutex> lock(mutex_);
    if (segment == nullptr) throw out_of_memory(segment_size);
    try {
      arena_.add_segment(segment, segment_size, bucket);
    } catch (...) {
      std::free(segment);
      throw;
    }
    add_active(bucket);
    stats_.reserved_bytes += segment_size;
    stats_.peak_reserved_bytes = std::max(stats_.peak_reserved_bytes, stats_.reserved_bytes);
    return segment;
  }

  void add_active(size_t bucket) {
    stats_.active_bytes += bucket;
    stats_.peak_active_bytes = std::max(stats_.peak_active_bytes, stats_.active_bytes);
  }

  std::mutex mutex_;
  bool enabled_ = true;
  std::map<std::pair<size_t, size_t>, std::vector<void*>> free_;
  size_t cached_bytes_ = 0;
  HostBlockArena arena_{kArenaGranule};
  HostMemoryStats stats_;
};

// Returns a block to the cache when the last handle to its storage is gone.
struct HostBlockRelease {
  size_t alignment;
  size_t bucket;
  void operator()(void* block) const noexcept {
    HostCache::instance().give_back(block, alignment, bucket);
  }
};

Allocation allocate_host(size_t nbytes, const AllocationOptions& options) {
  // Over-allocate by `alignment` so that base + misalignment is inside the block.
  const size_t bucket = bucket_bytes((nbytes + options.alignment + options.alignment - 1) /
                                     options.alignment * options.alignment);
  size_t block_bytes = 0;
  void* base = HostCache::instance().take(options.alignment, bucket, &block_bytes);
  Allocation allocation;
  allocation.data = static_cast<char*>(base) + options.misalignment;
  allocation.nbytes = nbytes;
  // If the control block cannot be allocated, shared_ptr calls the deleter itself.
  allocation.owner = std::shared_ptr<void>(base, HostBlockRelease{options.alignment, block_bytes});
  return allocation;
}

}  // namespace

HostMemoryStats host_memory_stats() { return HostCache::instance().stats(); }
void reset_host_memory_peak() { HostCache::instance().reset_peak(); }
void release_cached_host_memory() { HostCache::instance().release_cached(); }

Allocation allocate(size_t nbytes, const Device& device, const AllocationOptions& options) {
  check_options(options);
  if (device.is_cpu()) return allocate_host(nbytes, options);
  require_device_available(device, "allocate");
  return allocate_cuda(nbytes, device.index, options);
}

}  // namespace b3
