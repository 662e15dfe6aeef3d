// The host caching allocator (tensor/allocator.h): alignment and deliberate
// misalignment honoured, freed blocks handed out again (same bucket, or a
// small block's bucket up to twice the size), statistics that add up, the cache released
// on request, bad options refused, and concurrent use from two threads.
//
// The cache is process-wide, so each check measures differences of the
// statistics around its own allocations.
#include <doctest/doctest.h>

#include <cstdint>
#include <thread>
#include <vector>

#include "tensor/allocator.h"

using namespace b3;

namespace {

AllocationOptions aligned(size_t alignment, size_t misalignment = 0) {
  AllocationOptions o;
  o.alignment = alignment;
  o.misalignment = misalignment;
  return o;
}

}  // namespace

TEST_CASE("host allocator: alignment and deliberate misalignment are honoured") {
  for (size_t alignment : {size_t{64}, size_t{256}, size_t{4096}}) {
    for (size_t misalignment : {size_t{0}, size_t{4}, size_t{60}}) {
      for (size_t nbytes : {size_t{0}, size_t{1}, size_t{1000}, size_t{1} << 20}) {
        CAPTURE(alignment);
        CAPTURE(misalignment);
        CAPTURE(nbytes);
        Allocation a = allocate(nbytes, Device::cpu(), aligned(alignment, misalignment));
        const auto address = reinterpret_cast<uintptr_t>(a.data);
        CHECK(address % alignment == misalignment);
        CHECK(a.nbytes == nbytes);
        // The whole requested range is writable (the block holds the misalignment too).
        if (nbytes > 0) {
          static_cast<char*>(a.data)[0] = 1;
          static_cast<char*>(a.data)[nbytes - 1] = 2;
        }
      }
    }
  }
}

TEST_CASE("host allocator: a freed block serves the next request of its size") {
  const size_t nbytes = 3u << 20;  // 3 MiB
  void* first = nullptr;
  {
    Allocation a = allocate(nbytes, Device::cpu(), aligned(64));
    first = a.data;
  }
  const HostMemoryStats before = host_memory_stats();
  Allocation b = allocate(nbytes, Device::cpu(), aligned(64));
  const HostMemoryStats after = host_memory_stats();
  CHECK(b.data == first);  // the same block back, no new memory
  CHECK(after.cache_hits == before.cache_hits + 1);
  CHECK(after.allocations == before.allocations + 1);
  CHECK(after.reserved_bytes == before.reserved_bytes);
  CHECK(after.active_bytes >= before.active_bytes + nbytes);
}

TEST_CASE("host allocator: a larger cached small block (up to twice the size) serves a miss") {
  release_cached_host_memory();
  // An alignment no other test uses gives this test its own buckets; sizes
  // under 1 MiB, the per-size lists' range (larger blocks come from the
  // segment pool: test_host_block_arena).
  const AllocationOptions options = aligned(2048);
  void* large = nullptr;
  {
    Allocation a = allocate(700u << 10, Device::cpu(), options);  // 700 KiB, then freed
    large = a.data;
  }
  const HostMemoryStats before = host_memory_stats();
  Allocation small = allocate(500u << 10, Device::cpu(), options);  // 500 KiB: no block of its own
  CHECK(small.data == large);
  CHECK(host_memory_stats().reserved_bytes == before.reserved_bytes);
  // More than twice the request: not used, new memory instead.
  Allocation tiny = allocate(100u << 10, Device::cpu(), options);
  CHECK(tiny.data != large);
  CHECK(host_memory_stats().reserved_bytes > before.reserved_bytes);
}

TEST_CASE("host allocator: statistics add up and the cache can be released") {
  release_cached_host_memory();
  const HostMemoryStats start = host_memory_stats();
  CHECK(start.reserved_bytes == start.active_bytes);  // nothing cached
  reset_host_memory_peak();
  {
    Allocation a = allocate(10u << 20, Device::cpu(), aligned(64));
    Allocation b = allocate(1u << 20, Device::cpu(), aligned(64));
    const HostMemoryStats during = host_memory_stats();
    CHECK(during.active_bytes >= start.active_bytes + (11u << 20));
    CHECK(during.peak_active_bytes >= during.active_bytes);
    CHECK(during.reserved_bytes >= during.active_bytes);
  }
  const HostMemoryStats after = host_memory_stats();
  CHECK(after.active_bytes == start.active_bytes);
  CHECK(after.reserved_bytes > after.active_bytes);  // the two blocks are cached
  CHECK(after.peak_active_bytes >= start.active_bytes + (11u << 20));
  release_cached_host_memory();
  CHECK(host_memory_stats().reserved_bytes == host_memory_stats().active_bytes);
}

TEST_CASE("host allocator: bad options are refused with clear messages") {
  CHECK_THROWS_WITH_AS(allocate(16, Device::cpu(), aligned(48)),
                       doctest::Contains("must be a power of two"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(allocate(16, Device::cpu(), aligned(64, 64)),
                       doctest::Contains("must be smaller than the alignment"),
                       std::invalid_argument);
}

TEST_CASE("host allocator: two threads allocating and freeing at once") {
  auto work = [](int seed) {
    std::vector<Allocation> held;
    for (int i = 0; i < 2000; ++i) {
      const size_t nbytes = static_cast<size_t>((i * 7919 + seed * 104729) % 300000 + 1);
      held.push_back(allocate(nbytes, Device::cpu(), aligned(64)));
      static_cast<char*>(held.back().data)[nbytes - 1] = static_cast<char>(i);
      if (held.size() > 16) held.erase(held.begin());
    }
  };
  const HostMemoryStats before = host_memory_stats();
  std::thread a(work, 1), b(work, 2);
  a.join();
  b.join();
  const HostMemoryStats after = host_memory_stats();
  CHECK(after.active_bytes == before.active_bytes);  // every block came back
  CHECK(after.allocations == before.allocations + 4000);
}
