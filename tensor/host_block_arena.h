// The host allocator's pool for large blocks (1 MiB and up): segments taken
// from the system once and carved into blocks by best fit, a block's unused
// tail split off as a free range, and free neighbours merged again when a
// block comes back. A forward pass asks for activations of many sizes, one
// after another; a cache of whole blocks keyed by size ends up holding a
// block of every size (MobileNetV3-Large's eval forward at 224x224, batch
// 256: 2.0 GB above the RSS before the first forward, against 0.9 GB when
// every freed block goes back to the system), while here a freed 800 MB
// block serves the next requests of 200 MB each without asking the system,
// so without fresh pages to fault in and zero. The idea of PyTorch's CUDA
// caching allocator's large pool.
//
// Bookkeeping only: the caller allocates and frees the segments themselves
// (tensor/allocator.cpp, under its mutex: this class is not thread-safe).
// Every size is a multiple of the granule, so every block of a segment that
// starts on a granule boundary starts on one too.
#pragma once

#include <cstddef>
#include <map>
#include <set>
#include <utility>
#include <vector>

namespace b3 {

class HostBlockArena {
 public:
  explicit HostBlockArena(size_t granule);

  // The smallest free range of at least `bytes` (a multiple of the granule),
  // its tail beyond `bytes` split off and left free; null when none fits.
  void* take(size_t bytes);
  // A segment of `bytes` at `base` from the system; the first `used` bytes of
  // it are handed out at once as a block (the request that made it), the
  // rest is free. Returns base.
  void* add_segment(void* base, size_t bytes, size_t used);
  // A block from take() or add_segment() is free again (merged with free
  // neighbours in its segment). Returns the block's size.
  size_t give_back(void* block);
  // Removes every segment with no block in use and returns them (base, bytes)
  // for the caller to free.
  std::vector<std::pair<void*, size_t>> release_free_segments();

  size_t free_bytes() const { return free_bytes_; }
  size_t segment_bytes() const { return segment_bytes_; }
  size_t segment_count() const { return segments_.size(); }

 private:
  struct Range {
    size_t bytes = 0;
    bool free = false;
    char* segment = nullptr;  // the base of the segment the range lies in
  };
  void mark_free(char* address, Range& range);
  void unmark_free(char* address, const Range& range);

  size_t granule_;
  std::map<char*, Range> ranges_;                  // every range of every segment, by address
  std::set<std::pair<size_t, char*>> free_sizes_;  // free ranges by (bytes, address): best fit
  std::map<char*, size_t> segments_;               // base -> bytes
  size_t free_bytes_ = 0, segment_bytes_ = 0;
};

}  // namespace b3
