// Best fit, split and merge over the huge-block segments (host_block_arena.h).
#include "tensor/host_block_arena.h"

#include <iterator>
#include <stdexcept>
#include <string>

namespace b3 {

namespace {

void check_multiple(size_t bytes, size_t granule, const char* what) {
  if (bytes == 0 || bytes % granule != 0) {
    throw std::invalid_argument(std::string("HostBlockArena: ") + what + " of " +
                                std::to_string(bytes) + " bytes is not a positive multiple of " +
                                std::to_string(granule));
  }
}

}  // namespace

HostBlockArena::HostBlockArena(size_t granule) : granule_(granule) {
  if (granule == 0) throw std::invalid_argument("HostBlockArena: the granule must be positive");
}

void HostBlockArena::mark_free(char* address, Range& range) {
  free_sizes_.insert({range.bytes, address});  // first: if it throws, nothing changed
  range.free = true;
  free_bytes_ += range.bytes;
}

void HostBlockArena::unmark_free(char* address, const Range& range) {
  free_sizes_.erase({range.bytes, address});
  free_bytes_ -= range.bytes;
}

void* HostBlockArena::take(size_t bytes) {
  check_multiple(bytes, granule_, "a block");
  const auto fit = free_sizes_.lower_bound({bytes, nullptr});
  if (fit == free_sizes_.end()) return nullptr;
  char* address = fit->second;
  Range& range = ranges_.at(address);
  unmark_free(address, range);
  range.free = false;
  if (range.bytes > bytes) {
    Range tail{range.bytes - bytes, false, range.segment};
    range.bytes = bytes;
    mark_free(address + bytes, ranges_.emplace(address + bytes, tail).first->second);
  }
  return address;
}

void* HostBlockArena::add_segment(void* base, size_t bytes, size_t used) {
  check_multiple(bytes, granule_, "a segment");
  check_multiple(used, granule_, "a block");
  if (used > bytes) throw std::invalid_argument("HostBlockArena: the block exceeds its segment");
  char* start = static_cast<char*>(base);
  segments_.emplace(start, bytes);
  segment_bytes_ += bytes;
  ranges_.emplace(start, Range{used, false, start});
  if (used < bytes) {
    mark_free(start + used,
              ranges_.emplace(start + used, Range{bytes - used, false, start}).first->second);
  }
  return base;
}

size_t HostBlockArena::give_back(void* block) {
  const auto it = ranges_.find(static_cast<char*>(block));
  if (it == ranges_.end() || it->second.free) {
    throw std::logic_error("HostBlockArena: a block given back that is not in use");
  }
  const size_t bytes = it->second.bytes;
  auto merged = it;
  // The next range, if free and in the same segment, joins this one.
  const auto next = std::next(merged);
  if (next != ranges_.end() && next->second.free &&
      next->second.segment == merged->second.segment) {
    unmark_free(next->first, next->second);
    merged->second.bytes += next->second.bytes;
    ranges_.erase(next);
  }
  // This one joins the previous range, if free and in the same segment.
  if (merged != ranges_.begin()) {
    const auto previous = std::prev(merged);
    if (previous->second.free && previous->second.segment == merged->second.segment) {
      unmark_free(previous->first, previous->second);
      previous->second.bytes += merged->second.bytes;
      ranges_.erase(merged);
      merged = previous;
    }
  }
  mark_free(merged->first, merged->second);
  return bytes;
}

std::vector<std::pair<void*, size_t>> HostBlockArena::release_free_segments() {
  std::vector<std::pair<void*, size_t>> released;
  for (auto segment = segments_.begin(); segment != segments_.end();) {
    const auto range = ranges_.find(segment->first);
    if (range->second.free && range->second.bytes == segment->second) {
      unmark_free(range->first, range->second);
      ranges_.erase(range);
      released.emplace_back(segment->first, segment->second);
      segment_bytes_ -= segment->second;
      segment = segments_.erase(segment);
    } else {
      ++segment;
    }
  }
  return released;
}

}  // namespace b3
