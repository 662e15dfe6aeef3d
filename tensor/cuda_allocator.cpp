// The caching allocator's bookkeeping (tensor/cuda_allocator.h explains the
// scheme). Plain C++ with no CUDA call: segments come from a MemorySource, so
// this file is compiled, and tested, in every build.
#include "tensor/cuda_allocator.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <limits>
#include <mutex>
#include <set>
#include <stdexcept>
#include <unordered_map>
#include <vector>

namespace b3::cuda {

namespace {

// "1.50 MiB": bytes in the largest binary unit that keeps the number >= 1.
std::string format_bytes(size_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024.0 && unit < 4) {
    value /= 1024.0;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof(text), unit == 0 ? "%.0f %s" : "%.2f %s", value, units[unit]);
  return text;
}

size_t round_up(size_t value, size_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

bool is_power_of_two(size_t value) { return value != 0 && (value & (value - 1)) == 0; }

// One block of a segment: either handed out (allocated) or free and in its
// pool's free set. prev/next link the blocks of one segment in address order;
// a block with neither is a whole segment.
struct Block {
  char* ptr = nullptr;
  size_t size = 0;
  size_t requested = 0;  // bytes asked for, while allocated
  StreamHandle stream = nullptr;
  uint64_t pool = 0;   // 0: the shared cache; else a private pool (CUDA graphs)
  bool small = false;  // which size class
  bool allocated = false;
  Block* prev = nullptr;
  Block* next = nullptr;
};

// Free blocks ordered by (pool, stream, size, address): lower_bound finds the
// best fit for a pool and stream, and equal sizes go lowest address first
// (deterministic).
struct BlockOrder {
  bool operator()(const Block* a, const Block* b) const {
    if (a->pool != b->pool) return a->pool < b->pool;
    if (a->stream != b->stream) return std::less<StreamHandle>()(a->stream, b->stream);
    if (a->size != b->size) return a->size < b->size;
    return std::less<char*>()(a->ptr, b->ptr);
  }
};

using FreeBlocks = std::set<Block*, BlockOrder>;

}  // namespace

struct CachingAllocator::State {
  explicit State(std::unique_ptr<MemorySource> memory_source) : source(std::move(memory_source)) {}

  ~State() {
    // Only reached when no allocation is alive (each holds this state), so
    // every segment is one merged free block.
    release_cached_segments();
    if (!small_free.empty() || !large_free.empty() || !active.empty()) {
      std::fprintf(stderr,
                   "b3: CachingAllocator for %s destroyed with %zu live and %zu split free "
                   "blocks; their segments leak\n",
                   source->name().c_str(), active.size(), small_free.size() + large_free.size());
    }
  }

  std::unique_ptr<MemorySource> source;
  mutable std::mutex mutex;
  FreeBlocks small_free;
  FreeBlocks large_free;
  std::unordered_map<char*, Block*> active;  // handed-out blocks by start address
  MemoryStats stats;
  // Private pools (see begin_private_pool): the streams whose requests go to
  // one now, and every pool not yet released.
  std::vector<std::pair<StreamHandle, uint64_t>> private_routes;
  std::vector<uint64_t> live_private_pools;
  uint64_t next_private_pool = 1;

  // The pool a request for `stream` comes from: its private pool while one
  // is routed, else the shared cache (0).
  uint64_t pool_for(StreamHandle stream) const {
    for (const auto& [routed, pool] : private_routes)
      if (routed == stream) return pool;
    return 0;
  }

  FreeBlocks& pool(bool small) { return small ? small_free : large_free; }

  void update_peaks() {
    stats.peak_active_bytes = std::max(stats.peak_active_bytes, stats.active_bytes);
    stats.peak_reserved_bytes = std::max(stats.peak_reserved_bytes, stats.reserved_bytes);
  }

  // The smallest free block of `pool_id` and `stream` with at least `size` bytes.
  Block* take_best_fit(uint64_t pool_id, bool small, StreamHandle stream, size_t size) {
    FreeBlocks& free_blocks = pool(small);
    Block key;
    key.pool = pool_id;
    key.stream = stream;
    key.size = size;
    key.ptr = nullptr;
    const auto it = free_blocks.lower_bound(&key);
    if (it == free_blocks.end() || (*it)->pool != pool_id || (*it)->stream != stream) {
      return nullptr;
    }
    Block* block = *it;
    free_blocks.erase(it);
    return block;
  }

  // A new segment from the source. Its preferred size (shared by later
  // requests) first, then just enough for this request; if neither fits,
  // the cached segments go back to the device and both are tried again.
  Block* new_segment(uint64_t pool_id, bool small, StreamHandle stream, size_t size,
                     size_t nbytes_asked) {
    const size_t preferred = small                      ? kSmallSegment
                             : size < kLargeSharedLimit ? kLargeSharedSegment
                                                        : round_up(size, kLargeRounding);
    const size_t minimal = small ? size : round_up(size, kLargeRounding);
    const size_t candidates[2] = {preferred, minimal};
    const int candidate_count = minimal < preferred ? 2 : 1;
    void* memory = nullptr;
    size_t segment_size = 0;
    for (int attempt = 0; attempt < 2 && memory == nullptr; ++attempt) {
      if (attempt == 1) {
        ++stats.oom_retries;
        release_cached_segments();
      }
      for (int c = 0; c < candidate_count && memory == nullptr; ++c) {
        memory = source->allocate(candidates[c]);
        if (memory != nullptr) segment_size = candidates[c];
      }
    }
    if (memory == nullptr) throw_out_of_memory(nbytes_asked, minimal);
    if (reinterpret_cast<uintptr_t>(memory) % source->base_alignment() != 0) {
      source->release(memory, segment_size);
      throw std::logic_error(std::string("CachingAllocator: ") + source->name() +
                             " returned a segment not " + "aligned to its stated " +
                             std::to_string(source->base_alignment()) + " bytes");
    }
    Block* block = new Block;
    block->ptr = static_cast<char*>(memory);
    block->size = segment_size;
    block->stream = stream;
    block->pool = pool_id;
    block->small = small;
    stats.reserved_bytes += segment_size;
    ++stats.segments;
    ++stats.device_mallocs;
    update_peaks();
    return block;
  }

  [[noreturn]] void throw_out_of_memory(size_t nbytes_asked, size_t segment_size) {
    const auto [free_bytes, total_bytes] = source->memory_info();
    throw std::runtime_error(
        std::string("CUDA out of memory on ") + source->name() + ": asked for " +
        std::to_string(nbytes_asked) + " bytes (" + format_bytes(nbytes_asked) +
        ", needing a segment of " + format_bytes(segment_size) + "); the device has " +
        std::to_string(free_bytes) + " bytes free (" + format_bytes(free_bytes) + ") of " +
        format_bytes(total_bytes) + "; b3's allocator holds " + format_bytes(stats.reserved_bytes) +
        " reserved, " + format_bytes(stats.active_bytes) +
        " in use, after giving its cache back. Use a smaller batch, or release tensors.");
  }

  // Keeps the first `size` bytes of `block`, returning the rest to the free
  // set when it is worth keeping apart.
  void maybe_split(Block* block, size_t size) {
    const size_t remaining = block->size - size;
    const bool worth_it = block->small ? remaining >= kBlockRounding : remaining > kSmallRequest;
    if (!worth_it) return;
    Block* rest = new Block;
    rest->ptr = block->ptr + size;
    rest->size = remaining;
    rest->stream = block->stream;
    rest->pool = block->pool;
    rest->small = block->small;
    rest->prev = block;
    rest->next = block->next;
    if (block->next != nullptr) block->next->prev = rest;
    block->next = rest;
    block->size = size;
    pool(rest->small).insert(rest);
  }

  // A block back from its last user: merge with free neighbours, cache it.
  void release(char* ptr) {
    std::lock_guard<std::mutex> lock(mutex);
    const auto it = active.find(ptr);
    if (it == active.end()) {
      std::fprintf(stderr, "b3: CachingAllocator for %s: release of unknown block %p ignored\n",
                   source->name().c_str(), static_cast<void*>(ptr));
      return;
    }
    Block* block = it->second;
    active.erase(it);
    stats.active_bytes -= block->size;
    stats.requested_bytes -= block->requested;
    --stats.active_blocks;
    block->allocated = false;
    block->requested = 0;
    // A shared block freed while its stream is being captured may still be
    // read by the graph when it is replayed (an input the captured kernels
    // used): it joins the capture's pool, so nothing else gets it while the
    // graph lives.
    if (block->pool == 0) block->pool = pool_for(block->stream);
    cache_free_block(block);
  }

  // Merges a free block with its free neighbours of the same pool and puts
  // the result in the free set.
  void cache_free_block(Block* block) {
    FreeBlocks& free_blocks = pool(block->small);
    if (Block* prev = block->prev;
        prev != nullptr && !prev->allocated && prev->pool == block->pool) {
      free_blocks.erase(prev);
      prev->size += block->size;
      prev->next = block->next;
      if (block->next != nullptr) block->next->prev = prev;
      delete block;
      block = prev;
    }
    if (Block* next = block->next;
        next != nullptr && !next->allocated && next->pool == block->pool) {
      free_blocks.erase(next);
      block->size += next->size;
      block->next = next->next;
      if (next->next != nullptr) next->next->prev = block;
      delete next;
    }
    free_blocks.insert(block);
    stats.cached_blocks = small_free.size() + large_free.size();
  }

  // Gives each free block of the shared cache that is a whole segment back
  // to the source (private pools keep theirs until they are released).
  void release_cached_segments() {
    for (FreeBlocks* free_blocks : {&small_free, &large_free}) {
      for (auto it = free_blocks->begin(); it != free_blocks->end();) {
        Block* block = *it;
        if (block->pool != 0 || block->prev != nullptr || block->next != nullptr) {
          ++it;
          continue;
        }
        source->release(block->ptr, block->size);
        stats.reserved_bytes -= block->size;
        --stats.segments;
        ++stats.device_frees;
        it = free_blocks->erase(it);
        delete block;
      }
    }
    stats.cached_blocks = small_free.size() + large_free.size();
  }

  // Every block of private pool `pool_id`, live or free, back to the shared
  // cache; free ones merge with their free neighbours there.
  void retire_private_pool(uint64_t pool_id) {
    for (auto& [ptr, block] : active)
      if (block->pool == pool_id) block->pool = 0;
    std::vector<Block*> freed;
    for (FreeBlocks* free_blocks : {&small_free, &large_free}) {
      for (auto it = free_blocks->begin(); it != free_blocks->end();) {
        if ((*it)->pool == pool_id) {
          freed.push_back(*it);
          it = free_blocks->erase(it);
        } else {
          ++it;
        }
      }
    }
    // Re-inserted in address order; a block merged into a neighbour that is
    // itself still waiting in `freed` is skipped when its turn comes.
    std::sort(freed.begin(), freed.end(),
              [](const Block* a, const Block* b) { return std::less<char*>()(a->ptr, b->ptr); });
    for (Block* block : freed) block->pool = 0;
    for (size_t i = 0; i < freed.size(); ++i) {
      Block* block = freed[i];
      // Absorb following free neighbours from `freed` first, so none is deleted
      // while still listed; then merge with whatever is free and cached already.
      while (i + 1 < freed.size() && block->next == freed[i + 1]) {
        Block* next = freed[++i];
        block->size += next->size;
        block->next = next->next;
        if (next->next != nullptr) next->next->prev = block;
        delete next;
      }
      cache_free_block(block);
    }
    stats.cached_blocks = small_free.size() + large_free.size();
  }
};

namespace {

// The owner of an allocation: returns the block, and keeps the bookkeeping
// alive until then.
struct ReturnBlock {
  std::shared_ptr<CachingAllocator::State> state;
  void operator()(void* block_start) const { state->release(static_cast<char*>(block_start)); }
};

}  // namespace

CachingAllocator::CachingAllocator(std::unique_ptr<MemorySource> source) {
  if (!source) throw std::invalid_argument("CachingAllocator: no memory source");
  const size_t base = source->base_alignment();
  if (!is_power_of_two(base) || base > kBlockRounding) {
    throw std::invalid_argument("CachingAllocator: the source's base alignment " +
                                std::to_string(base) +
                                " must be a power of two <= " + std::to_string(kBlockRounding));
  }
  state_ = std::make_shared<State>(std::move(source));
}

CachingAllocator::~CachingAllocator() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->release_cached_segments();
}

Allocation CachingAllocator::allocate(size_t nbytes, const AllocationOptions& options,
                                      StreamHandle stream) {
  State& s = *state_;
  const size_t alignment = options.alignment;
  if (!is_power_of_two(alignment)) {
    throw std::invalid_argument("CachingAllocator::allocate: alignment " +
                                std::to_string(alignment) + " must be a power of two");
  }
  if (options.misalignment >= alignment) {
    throw std::invalid_argument("CachingAllocator::allocate: misalignment " +
                                std::to_string(options.misalignment) +
                                " must be smaller than the alignment " + std::to_string(alignment));
  }
  // Blocks start at multiples of the source's base alignment (segment starts)
  // plus multiples of 512 (block sizes), so a larger alignment needs up to
  // alignment - base bytes of padding in front.
  const size_t base = s.source->base_alignment();
  const size_t padding = alignment > base ? alignment - base : 0;
  const size_t overhead = padding + options.misalignment + kBlockRounding;
  if (nbytes > std::numeric_limits<size_t>::max() / 2 - overhead) {
    throw std::invalid_argument("CachingAllocator::allocate: " + std::to_string(nbytes) +
                                " bytes is not a size any device has");
  }
  const size_t size =
      round_up(std::max<size_t>(nbytes + padding + options.misalignment, 1), kBlockRounding);
  const bool small = size <= kSmallRequest;

  std::lock_guard<std::mutex> lock(s.mutex);
  const uint64_t pool_id = s.pool_for(stream);
  Block* block = s.take_best_fit(pool_id, small, stream, size);
  const bool from_cache = block != nullptr;
  if (!from_cache) block = s.new_segment(pool_id, small, stream, size, nbytes);
  s.maybe_split(block, size);
  block->allocated = true;
  block->requested = nbytes;
  s.active.emplace(block->ptr, block);
  s.stats.active_bytes += block->size;
  s.stats.requested_bytes += nbytes;
  ++s.stats.active_blocks;
  ++s.stats.allocations;
  if (from_cache) ++s.stats.cache_hits;
  s.stats.cached_blocks = s.small_free.size() + s.large_free.size();
  s.update_peaks();

  const uintptr_t start = reinterpret_cast<uintptr_t>(block->ptr);
  const uintptr_t aligned = (start + alignment - 1) / alignment * alignment;
  char* data = block->ptr + (aligned - start) + options.misalignment;
  if (data + nbytes > block->ptr + block->size) {  // cannot happen: the padding covers it
    throw std::logic_error("CachingAllocator::allocate: block of " + std::to_string(block->size) +
                           " bytes too small for " + std::to_string(nbytes) + " bytes at offset " +
                           std::to_string(data - block->ptr));
  }
  Allocation allocation;
  allocation.data = data;
  allocation.nbytes = nbytes;
  // (If making the owner throws, shared_ptr calls ReturnBlock itself, so the
  // block cannot leak; the lock is not held then: release() takes it again.)
  allocation.owner = std::shared_ptr<void>(block->ptr, ReturnBlock{state_});
  return allocation;
}

MemoryStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->stats;
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->stats.peak_active_bytes = state_->stats.active_bytes;
  state_->stats.peak_reserved_bytes = state_->stats.reserved_bytes;
}

uint64_t CachingAllocator::begin_private_pool(StreamHandle stream) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  State& s = *state_;
  if (s.pool_for(stream) != 0) {
    throw std::logic_error("CachingAllocator::begin_private_pool: stream " +
                           std::to_string(reinterpret_cast<uintptr_t>(stream)) + " of " +
                           s.source->name() + " already allocates from a private pool");
  }
  const uint64_t pool_id = s.next_private_pool++;
  s.private_routes.emplace_back(stream, pool_id);
  s.live_private_pools.push_back(pool_id);
  return pool_id;
}

void CachingAllocator::end_private_pool(StreamHandle stream) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  auto& routes = state_->private_routes;
  const auto it = std::find_if(routes.begin(), routes.end(),
                               [&](const auto& route) { return route.first == stream; });
  if (it == routes.end()) {
    throw std::logic_error("CachingAllocator::end_private_pool: stream " +
                           std::to_string(reinterpret_cast<uintptr_t>(stream)) + " of " +
                           state_->source->name() + " allocates from no private pool");
  }
  routes.erase(it);
}

void CachingAllocator::release_private_pool(uint64_t pool) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  State& s = *state_;
  for (const auto& route : s.private_routes) {
    if (route.second == pool) {
      throw std::logic_error("CachingAllocator::release_private_pool: pool " +
                             std::to_string(pool) + " of " + s.source->name() +
                             " still receives requests (end_private_pool first)");
    }
  }
  auto& live = s.live_private_pools;
  const auto it = std::find(live.begin(), live.end(), pool);
  if (it == live.end()) {
    throw std::logic_error("CachingAllocator::release_private_pool: no private pool " +
                           std::to_string(pool) + " on " + s.source->name());
  }
  live.erase(it);
  s.retire_private_pool(pool);
}

void CachingAllocator::clear_cache() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->release_cached_segments();
}

std::string MemoryStats::str() const {
  return std::string("active ") + format_bytes(active_bytes) + " (peak " +
         format_bytes(peak_active_bytes) + "), reserved " + format_bytes(reserved_bytes) +
         " (peak " + format_bytes(peak_reserved_bytes) + "), " + std::to_string(active_blocks) +
         " blocks in use, " + std::to_string(cached_blocks) + " cached, " +
         std::to_string(segments) + " segments; " + std::to_string(allocations) + " allocations, " +
         std::to_string(cache_hits) + " from the cache, " + std::to_string(device_mallocs) +
         " device mallocs, " + std::to_string(device_frees) + " device frees, " +
         std::to_string(oom_retries) + " out-of-memory retries";
}

}  // namespace b3::cuda
