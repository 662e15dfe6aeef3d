// The huge-block pool (tensor/host_block_arena.h) on bookkeeping alone, with
// fake segment addresses (nothing is read or written there): best fit, the
// tail split off, neighbours merged in either order but never across
// segments, free segments released, misuse refused; then a random sequence
// checked against a plain model of which bytes are in use. And the host
// allocator through it: a freed 96 MiB block serves three smaller large
// requests without new memory.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <stdexcept>
#include <vector>

#include "tensor/allocator.h"
#include "tensor/host_block_arena.h"

using namespace b3;

namespace {

constexpr size_t kGranule = size_t{2} << 20;

// A fake segment base: far apart, so that ranges of different segments
// never touch unless a test puts them side by side on purpose.
void* fake_base(uintptr_t n) { return reinterpret_cast<void*>((n + 1) * (uintptr_t{1} << 40)); }
char* at(void* base, size_t granules) { return static_cast<char*>(base) + granules * kGranule; }

}  // namespace

TEST_CASE("host block arena: best fit, split tail, merge on return, release") {
  HostBlockArena arena(kGranule);
  void* a = fake_base(0);
  void* b = fake_base(1);
  CHECK(arena.take(4 * kGranule) == nullptr);  // empty
  CHECK(arena.add_segment(a, 10 * kGranule, 4 * kGranule) == a);
  CHECK(arena.add_segment(b, 5 * kGranule, 5 * kGranule) == b);
  CHECK(arena.free_bytes() == 6 * kGranule);
  CHECK(arena.segment_bytes() == 15 * kGranule);
  // 2 granules: the only free range is segment a's tail (6 granules), split.
  void* c = arena.take(2 * kGranule);
  CHECK(c == at(a, 4));
  CHECK(arena.free_bytes() == 4 * kGranule);
  // Segment b whole comes back: a free range of 5, while a's tail is 4.
  CHECK(arena.give_back(b) == 5 * kGranule);
  CHECK(arena.free_bytes() == 9 * kGranule);
  // 4 fits both; best fit takes a's 4-granule tail, not b's 5.
  void* d = arena.take(4 * kGranule);
  CHECK(d == at(a, 6));
  // 5 takes b whole, 1 more fits nowhere.
  CHECK(arena.take(5 * kGranule) == b);
  CHECK(arena.take(kGranule) == nullptr);
  // Returning a's three blocks in the order middle, last, first merges them
  // into one range the size of the segment: a then serves 10 granules.
  CHECK(arena.give_back(c) == 2 * kGranule);
  CHECK(arena.give_back(d) == 4 * kGranule);
  CHECK(arena.give_back(a) == 4 * kGranule);
  CHECK(arena.free_bytes() == 10 * kGranule);
  CHECK(arena.take(11 * kGranule) == nullptr);
  void* whole = arena.take(10 * kGranule);
  CHECK(whole == a);
  CHECK(arena.give_back(whole) == 10 * kGranule);
  // Release: only a (free), b is still in use.
  const auto released = arena.release_free_segments();
  REQUIRE(released.size() == 1);
  CHECK(released[0].first == a);
  CHECK(released[0].second == 10 * kGranule);
  CHECK(arena.segment_count() == 1);
  CHECK(arena.segment_bytes() == 5 * kGranule);
  CHECK(arena.free_bytes() == 0);
  arena.give_back(b);
  CHECK(arena.release_free_segments().size() == 1);
  CHECK(arena.segment_count() == 0);
}

TEST_CASE("host block arena: adjacent segments are never merged") {
  // Two segments side by side in memory (the system may place them so):
  // a block of the first and one of the second, both free, stay apart, so
  // each segment can still be given back to the system on its own.
  HostBlockArena arena(kGranule);
  void* first = fake_base(0);
  void* second = at(first, 3);
  arena.add_segment(first, 3 * kGranule, 3 * kGranule);
  arena.add_segment(second, 3 * kGranule, 3 * kGranule);
  arena.give_back(first);
  arena.give_back(second);
  CHECK(arena.free_bytes() == 6 * kGranule);
  CHECK(arena.take(4 * kGranule) == nullptr);  // 3 + 3 but not one range
  CHECK(arena.release_free_segments().size() == 2);
}

TEST_CASE("host block arena: misuse is refused") {
  HostBlockArena arena(kGranule);
  void* a = fake_base(0);
  CHECK_THROWS_WITH_AS(arena.take(kGranule + 1), doctest::Contains("not a positive multiple"),
                       std::invalid_argument);
  CHECK_THROWS_AS(arena.take(0), std::invalid_argument);
  CHECK_THROWS_WITH_AS(arena.add_segment(a, 2 * kGranule, 3 * kGranule),
                       doctest::Contains("exceeds its segment"), std::invalid_argument);
  arena.add_segment(a, 2 * kGranule, kGranule);
  CHECK_THROWS_WITH_AS(arena.give_back(at(a, 1)), doctest::Contains("not in use"),
                       std::logic_error);                            // the free tail
  CHECK_THROWS_AS(arena.give_back(fake_base(7)), std::logic_error);  // never handed out
  arena.give_back(a);
  CHECK_THROWS_AS(arena.give_back(a), std::logic_error);  // twice
}

TEST_CASE("host block arena: a random sequence never hands out a byte twice") {
  // A model of each segment's granules (in use or not) beside the arena:
  // every block taken must lie on free granules of one segment, and the
  // free bytes must equal the model's. 4 segments of up to 12 granules.
  HostBlockArena arena(kGranule);
  std::mt19937 rng(7);
  std::map<char*, std::vector<bool>> used;         // segment base -> granule in use
  std::map<char*, std::pair<char*, size_t>> held;  // block -> (segment, granules)
  auto model_free = [&] {
    size_t free = 0;
    for (const auto& [base, granules] : used)
      free += std::count(granules.begin(), granules.end(), false);
    return free * kGranule;
  };
  for (int i = 0; i < 4000; ++i) {
    const bool give = !held.empty() && rng() % 2 == 0;
    if (give) {
      auto it = held.begin();
      std::advance(it, rng() % held.size());
      const auto [segment, granules] = it->second;
      const size_t first = static_cast<size_t>(it->first - segment) / kGranule;
      CHECK(arena.give_back(it->first) == granules * kGranule);
      for (size_t g = first; g < first + granules; ++g) used[segment][g] = false;
      held.erase(it);
    } else {
      const size_t granules = 1 + rng() % 6;
      char* block = static_cast<char*>(arena.take(granules * kGranule));
      if (block == nullptr && used.size() < 4) {
        const size_t size = granules + rng() % 7;
        char* base = static_cast<char*>(fake_base(used.size()));
        block = static_cast<char*>(arena.add_segment(base, size * kGranule, granules * kGranule));
        used[base] = std::vector<bool>(size, false);
      }
      if (block == nullptr) continue;
      auto segment = std::prev(used.upper_bound(block));
      const size_t first = static_cast<size_t>(block - segment->first) / kGranule;
      REQUIRE(first + granules <= segment->second.size());
      for (size_t g = first; g < first + granules; ++g) {
        REQUIRE_FALSE(segment->second[g]);
        segment->second[g] = true;
      }
      held[block] = {segment->first, granules};
    }
    REQUIRE(arena.free_bytes() == model_free());
  }
}

TEST_CASE("host allocator: a freed huge block serves smaller huge requests without new memory") {
  release_cached_host_memory();
  const AllocationOptions options = default_allocation(Device::cpu());
  char* big = nullptr;
  {
    Allocation a = allocate(size_t{96} << 20, Device::cpu(), options);  // 96 MiB, freed
    big = static_cast<char*>(a.data);
  }
  const HostMemoryStats before = host_memory_stats();
  // Three requests of 24-32 MiB: under the per-size cache each would have
  // needed memory of its own (96 is more than twice each); here all three
  // are carved from the freed block.
  Allocation x = allocate(size_t{24} << 20, Device::cpu(), options);
  Allocation y = allocate(size_t{32} << 20, Device::cpu(), options);
  Allocation z = allocate(size_t{30} << 20, Device::cpu(), options);
  const HostMemoryStats after = host_memory_stats();
  CHECK(after.reserved_bytes == before.reserved_bytes);
  CHECK(after.cache_hits == before.cache_hits + 3);
  for (const Allocation* a : {&x, &y, &z}) {
    char* p = static_cast<char*>(a->data);
    CHECK(p >= big);
    // Inside the freed block: 96 MiB and the alignment's slack round up to a
    // 104 MiB bucket (allocator.cpp's bucket_bytes: steps of 8 MiB there).
    CHECK(p + a->nbytes <= big + (size_t{104} << 20));
    p[0] = 1;  // writable end to end
    p[a->nbytes - 1] = 2;
  }
  // The three blocks do not overlap.
  std::vector<std::pair<char*, size_t>> blocks = {{static_cast<char*>(x.data), x.nbytes},
                                                  {static_cast<char*>(y.data), y.nbytes},
                                                  {static_cast<char*>(z.data), z.nbytes}};
  std::sort(blocks.begin(), blocks.end());
  CHECK(blocks[0].first + blocks[0].second <= blocks[1].first);
  CHECK(blocks[1].first + blocks[1].second <= blocks[2].first);
}
