// The CUDA caching allocator. Its bookkeeping (buckets, pools, splitting,
// merging, streams, alignment, statistics, out-of-memory handling) is plain
// C++ over a MemorySource, so most cases run everywhere, on host memory
// standing in for a GPU. The last cases check the real device allocator and
// skip without a GPU.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensor/cuda_allocator.h"
#include "tensor/tensor.h"
#include "tests/support/cuda.h"

using namespace b3;
using cuda::CachingAllocator;

namespace {

constexpr size_t KiB = 1024;
constexpr size_t MiB = 1024 * 1024;

// Host memory posing as a device with `capacity` bytes. Records every
// segment, so tests can check what was asked for and given back.
struct FakeDevice {
  size_t capacity = 0;
  size_t used = 0;
  int allocate_calls = 0;
  int release_calls = 0;
  std::map<char*, size_t> live;  // segment start -> size
  std::vector<size_t> asked;     // every size asked for, in order
};

class FakeSource final : public cuda::MemorySource {
 public:
  explicit FakeSource(std::shared_ptr<FakeDevice> device) : device_(std::move(device)) {}
  void* allocate(size_t nbytes) override {
    ++device_->allocate_calls;
    device_->asked.push_back(nbytes);
    if (device_->used + nbytes > device_->capacity) return nullptr;
    void* memory = std::aligned_alloc(256, (nbytes + 255) / 256 * 256);
    REQUIRE(memory != nullptr);
    std::memset(memory, 0, nbytes);
    device_->used += nbytes;
    device_->live[static_cast<char*>(memory)] = nbytes;
    return memory;
  }
  void release(void* segment, size_t nbytes) noexcept override {
    ++device_->release_calls;
    const auto it = device_->live.find(static_cast<char*>(segment));
    if (it == device_->live.end() || it->second != nbytes) {
      std::fprintf(stderr, "FakeSource: bad release\n");
      std::abort();
    }
    device_->live.erase(it);
    device_->used -= nbytes;
    std::free(segment);
  }
  std::pair<size_t, size_t> memory_info() override {
    return {device_->capacity - device_->used, device_->capacity};
  }
  size_t base_alignment() const override { return 256; }
  std::string name() const override { return "fake:0"; }

 private:
  std::shared_ptr<FakeDevice> device_;
};

struct Fixture {
  std::shared_ptr<FakeDevice> device = std::make_shared<FakeDevice>();
  std::unique_ptr<CachingAllocator> allocator;
  explicit Fixture(size_t capacity = 1024 * MiB) {
    device->capacity = capacity;
    allocator = std::make_unique<CachingAllocator>(std::make_unique<FakeSource>(device));
  }
  Allocation get(size_t nbytes, cuda::StreamHandle stream = nullptr, size_t alignment = 256,
                 size_t misalignment = 0) {
    AllocationOptions options;
    options.alignment = alignment;
    options.misalignment = misalignment;
    return allocator->allocate(nbytes, options, stream);
  }
  // The segment holding p, checking [p, p + n) lies inside it.
  char* segment_of(const void* p, size_t n) const {
    const char* c = static_cast<const char*>(p);
    for (const auto& [start, size] : device->live) {
      if (c >= start && c + n <= start + size) return start;
    }
    FAIL("pointer not inside any live segment");
    return nullptr;
  }
};

cuda::StreamHandle fake_stream(uintptr_t id) { return reinterpret_cast<cuda::StreamHandle>(id); }

}  // namespace

TEST_CASE("cuda allocator: requests round up to 512 bytes and freed blocks are reused") {
  Fixture f;
  Allocation a = f.get(1);
  cuda::MemoryStats s = f.allocator->stats();
  CHECK(s.requested_bytes == 1);
  CHECK(s.active_bytes == 512);
  CHECK(s.reserved_bytes == CachingAllocator::kSmallSegment);
  CHECK(s.device_mallocs == 1);
  CHECK(s.cache_hits == 0);
  void* first = a.data;
  a = Allocation();  // released
  s = f.allocator->stats();
  CHECK(s.active_bytes == 0);
  CHECK(s.active_blocks == 0);
  CHECK(s.reserved_bytes == CachingAllocator::kSmallSegment);  // cached, not given back
  Allocation b = f.get(100);
  CHECK(b.data == first);  // the same block again
  s = f.allocator->stats();
  CHECK(s.device_mallocs == 1);
  CHECK(s.cache_hits == 1);
  CHECK(s.allocations == 2);
  CHECK(f.device->allocate_calls == 1);
}

TEST_CASE("cuda allocator: small requests share 2 MiB segments, split and merged") {
  Fixture f;
  std::vector<Allocation> quarter;
  for (int i = 0; i < 4; ++i) quarter.push_back(f.get(512 * KiB));  // exactly 4 per segment
  CHECK(f.allocator->stats().segments == 1);
  for (int i = 1; i < 4; ++i) {
    CHECK(static_cast<char*>(quarter[i].data) ==
          static_cast<char*>(quarter[0].data) + i * 512 * KiB);  // address order, best fit
  }
  Allocation fifth = f.get(512 * KiB);
  CHECK(f.allocator->stats().segments == 2);
  // Free the middle two, then the first: they merge into one 1.5 MiB free
  // block; the second segment's rest is another. Two 1 MiB requests (the
  // largest small ones) then fit without a new segment only because of the
  // merge (three separate 512 KiB blocks could not hold either).
  quarter[1] = Allocation();
  quarter[2] = Allocation();
  quarter[0] = Allocation();
  CHECK(f.allocator->stats().cached_blocks == 2);
  Allocation one = f.get(1 * MiB);
  Allocation two = f.get(1 * MiB);
  CHECK(f.segment_of(one.data, 1 * MiB) != f.segment_of(two.data, 1 * MiB));
  CHECK(f.allocator->stats().segments == 2);
  CHECK(f.allocator->stats().device_mallocs == 2);
  // Everything back: clear_cache returns both segments to the device.
  one = Allocation();
  two = Allocation();
  quarter.clear();
  fifth = Allocation();
  cuda::MemoryStats s = f.allocator->stats();
  CHECK(s.active_bytes == 0);
  CHECK(s.cached_blocks == 2);  // one whole free block per segment
  f.allocator->clear_cache();
  s = f.allocator->stats();
  CHECK(s.reserved_bytes == 0);
  CHECK(s.segments == 0);
  CHECK(s.device_frees == 2);
  CHECK(f.device->live.empty());
}

TEST_CASE("cuda allocator: large requests use shared 20 MiB or own 2 MiB-rounded segments") {
  Fixture f;
  Allocation a = f.get(3 * MiB);
  CHECK(f.device->asked.back() == CachingAllocator::kLargeSharedSegment);
  Allocation b = f.get(3 * MiB + 1);  // from the rest of the same segment
  CHECK(f.allocator->stats().device_mallocs == 1);
  CHECK(f.segment_of(b.data, 3 * MiB + 1) == f.segment_of(a.data, 3 * MiB));
  // 15 MiB does not fit in the 14 MiB rest: >= 10 MiB gets its own segment,
  // rounded up to 16 MiB; its 1 MiB rest is not split off (a large-pool rest
  // must exceed 1 MiB), so the block is the whole segment.
  Allocation big = f.get(15 * MiB);
  CHECK(f.device->asked.back() == 16 * MiB);
  CHECK(f.allocator->stats().segments == 2);
  // A small request never comes from the large pool.
  Allocation small = f.get(1 * MiB);
  CHECK(f.device->asked.back() == CachingAllocator::kSmallSegment);
  CHECK(f.allocator->stats().segments == 3);
  // 19.5 MiB fits nowhere: its own 20 MiB segment, 0.5 MiB rest kept inside.
  Allocation almost = f.get(19 * MiB + 512 * KiB);
  CHECK(f.device->asked.back() == 20 * MiB);
  CHECK(f.allocator->stats().active_bytes ==
        (3 * MiB) + (3 * MiB + 512) + 16 * MiB + 1 * MiB + 20 * MiB);
  CHECK(f.allocator->stats().requested_bytes ==
        (3 * MiB) + (3 * MiB + 1) + 15 * MiB + 1 * MiB + (19 * MiB + 512 * KiB));
}

TEST_CASE("cuda allocator: blocks are reused only for the stream they were allocated for") {
  Fixture f;
  Allocation a = f.get(4096, fake_stream(1));
  void* first = a.data;
  a = Allocation();
  Allocation other = f.get(4096, fake_stream(2));
  CHECK(other.data != first);
  CHECK(f.allocator->stats().device_mallocs == 2);
  Allocation same = f.get(4096, fake_stream(1));
  CHECK(same.data == first);
}

TEST_CASE("cuda allocator: a step that repeats the same requests gets the same addresses") {
  // Once a step needed no device malloc, the cache is in the same state at
  // the start of every later step, so best fit hands out the same addresses
  // (what CUDA graph capture needs).
  Fixture f;
  const std::vector<size_t> sizes = {100 * KiB, 3 * MiB, 700, 12 * MiB, 64 * KiB, 5 * MiB, 1};
  const auto run_step = [&] {
    std::vector<Allocation> live;
    std::vector<void*> addresses;
    for (size_t i = 0; i < sizes.size(); ++i) {
      live.push_back(f.get(sizes[i]));
      addresses.push_back(live.back().data);
      if (i % 3 == 2) live.erase(live.begin());  // free some mid-step, like activations
    }
    return addresses;
  };
  std::vector<void*> previous = run_step();
  int steps = 1;
  uint64_t mallocs = f.allocator->stats().device_mallocs;
  while (true) {  // warm up until a step allocates nothing new
    previous = run_step();
    ++steps;
    const uint64_t now = f.allocator->stats().device_mallocs;
    if (now == mallocs) break;
    mallocs = now;
    REQUIRE(steps < 5);
  }
  for (int repeat = 0; repeat < 3; ++repeat) {
    CHECK(run_step() == previous);
    CHECK(f.allocator->stats().device_mallocs == mallocs);
  }
}

TEST_CASE("cuda allocator: a private pool keeps its memory from everyone else until released") {
  // What a CUDA graph needs: the addresses its kernels were captured with
  // belong to it for as long as it lives.
  Fixture f;
  const cuda::StreamHandle stream = fake_stream(1);
  Allocation cached = f.get(64 * KiB, stream);
  void* shared_block = cached.data;
  cached = Allocation();  // a free block of the shared cache

  const uint64_t pool = f.allocator->begin_private_pool(stream);
  Allocation in_pool = f.get(64 * KiB, stream);
  CHECK(in_pool.data != shared_block);  // the shared cache is not used...
  CHECK(f.segment_of(in_pool.data, 64 * KiB) != f.segment_of(shared_block, 64 * KiB));
  void* pool_block = in_pool.data;
  in_pool = Allocation();  // freed during capture: reused inside the pool
  Allocation again = f.get(64 * KiB, stream);
  CHECK(again.data == pool_block);
  Allocation other_stream = f.get(64 * KiB, fake_stream(2));  // other streams: shared as before
  CHECK(f.segment_of(other_stream.data, 64 * KiB) != f.segment_of(pool_block, 64 * KiB));
  f.allocator->end_private_pool(stream);

  again = Allocation();  // back to the pool, not to the shared cache
  Allocation after = f.get(64 * KiB, stream);
  CHECK(after.data == shared_block);  // the shared block, not the pool's
  Allocation second = f.get(64 * KiB, stream);
  CHECK(f.segment_of(second.data, 64 * KiB) != f.segment_of(pool_block, 64 * KiB));
  const size_t reserved = f.allocator->stats().reserved_bytes;
  f.allocator->clear_cache();  // leaves the pool's segment alone
  CHECK(f.device->live.count(f.segment_of(pool_block, 64 * KiB)) == 1);

  f.allocator->release_private_pool(pool);
  after = Allocation();
  second = Allocation();
  Allocation reused = f.get(64 * KiB, stream);  // best fit now may come from the old pool
  const cuda::MemoryStats s = f.allocator->stats();
  CHECK(s.reserved_bytes <= reserved);
  reused = Allocation();
  other_stream = Allocation();
  f.allocator->clear_cache();  // every segment is whole and shared again: all go back
  CHECK(f.device->live.empty());
  CHECK(f.allocator->stats().reserved_bytes == 0);
}

TEST_CASE("cuda allocator: a shared block freed during a capture stays the graph's") {
  Fixture f;
  const cuda::StreamHandle stream = fake_stream(1);
  Allocation input = f.get(8 * KiB, stream);  // made before the capture, read by it
  void* input_block = input.data;
  const uint64_t pool = f.allocator->begin_private_pool(stream);
  input = Allocation();  // its last handle dies during the capture
  f.allocator->end_private_pool(stream);
  Allocation later = f.get(8 * KiB, stream);
  CHECK(later.data != input_block);  // not handed out while the graph may read it
  later = Allocation();
  f.allocator->release_private_pool(pool);
  Allocation after_release = f.get(8 * KiB, stream);
  CHECK(after_release.data == input_block);  // merged back: best fit, lowest address
  after_release = Allocation();
  f.allocator->clear_cache();
  CHECK(f.device->live.empty());  // the segment merged whole again
}

TEST_CASE("cuda allocator: private pool misuse is refused") {
  Fixture f;
  const cuda::StreamHandle stream = fake_stream(1);
  CHECK_THROWS_AS(f.allocator->end_private_pool(stream), std::logic_error);
  const uint64_t pool = f.allocator->begin_private_pool(stream);
  CHECK_THROWS_AS(f.allocator->begin_private_pool(stream), std::logic_error);
  CHECK_THROWS_AS(f.allocator->release_private_pool(pool), std::logic_error);  // still routed
  f.allocator->end_private_pool(stream);
  CHECK_THROWS_AS(f.allocator->release_private_pool(pool + 1), std::logic_error);
  f.allocator->release_private_pool(pool);
  CHECK_THROWS_AS(f.allocator->release_private_pool(pool), std::logic_error);  // twice
}

TEST_CASE("cuda allocator: alignment and deliberate misalignment are honoured") {
  Fixture f;
  for (size_t alignment : {size_t{256}, size_t{512}, size_t{4096}}) {
    for (size_t misalignment : {size_t{0}, size_t{4}, size_t{200}}) {
      for (size_t nbytes : {size_t{1}, size_t{1000}, size_t{2 * MiB + 3}}) {
        CAPTURE(alignment);
        CAPTURE(misalignment);
        CAPTURE(nbytes);
        Allocation a = f.get(nbytes, nullptr, alignment, misalignment);
        CHECK(reinterpret_cast<uintptr_t>(a.data) % alignment == misalignment);
        CHECK(a.nbytes == nbytes);
        // The whole range lies inside one segment and can be written.
        f.segment_of(a.data, nbytes);
        std::memset(a.data, 0x5A, nbytes);
      }
    }
  }
  CHECK_THROWS_WITH_AS(f.get(10, nullptr, 100), doctest::Contains("power of two"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(f.get(10, nullptr, 256, 256), doctest::Contains("misalignment"),
                       std::invalid_argument);
  CHECK_THROWS_AS(f.get(SIZE_MAX - 10), std::invalid_argument);
}

TEST_CASE("cuda allocator: statistics track active, peak and reserved bytes") {
  Fixture f;
  Allocation a = f.get(3 * MiB);
  Allocation b = f.get(1000);
  cuda::MemoryStats s = f.allocator->stats();
  CHECK(s.active_bytes == 3 * MiB + 1024);
  CHECK(s.requested_bytes == 3 * MiB + 1000);
  CHECK(s.peak_active_bytes == s.active_bytes);
  CHECK(s.reserved_bytes == 20 * MiB + 2 * MiB);
  CHECK(s.active_blocks == 2);
  a = Allocation();
  s = f.allocator->stats();
  CHECK(s.active_bytes == 1024);
  CHECK(s.peak_active_bytes == 3 * MiB + 1024);
  f.allocator->reset_peak();
  s = f.allocator->stats();
  CHECK(s.peak_active_bytes == 1024);
  CHECK(s.peak_reserved_bytes == 22 * MiB);
  f.allocator->clear_cache();  // the large segment is free: given back; the small one is in use
  s = f.allocator->stats();
  CHECK(s.reserved_bytes == 2 * MiB);
  CHECK(s.peak_reserved_bytes == 22 * MiB);  // peaks only drop on reset_peak
  CHECK(s.str().find("active 1.00 KiB") != std::string::npos);
}

TEST_CASE("cuda allocator: out of memory falls back to a smaller segment, then clears the cache") {
  Fixture f(8 * MiB);
  // 4 MiB: the shared 20 MiB segment does not fit, a 4 MiB one does.
  Allocation a = f.get(4 * MiB);
  CHECK(f.device->asked == std::vector<size_t>{20 * MiB, 4 * MiB});
  a = Allocation();  // cached: the fake device still has only 4 MiB free
  // 6 MiB: 20 and 6 MiB fail, the cache is given back, then 6 MiB fits.
  Allocation b = f.get(6 * MiB);
  cuda::MemoryStats s = f.allocator->stats();
  CHECK(s.oom_retries == 1);
  CHECK(s.device_frees == 1);
  CHECK(s.reserved_bytes == 6 * MiB);
  // 3 MiB more cannot fit at all: the error names the bytes asked and free.
  try {
    f.get(3 * MiB);
    FAIL("expected an out-of-memory error");
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    CHECK(message.find("out of memory on fake:0") != std::string::npos);
    CHECK(message.find("asked for 3145728 bytes") != std::string::npos);
    CHECK(message.find("2097152 bytes free") != std::string::npos);
    CHECK(message.find("6.00 MiB reserved") != std::string::npos);
  }
  // The failed request left the allocator consistent.
  s = f.allocator->stats();
  CHECK(s.active_blocks == 1);
  CHECK(s.active_bytes == 6 * MiB);
  b = Allocation();
  Allocation c = f.get(5 * MiB);  // reuses the cached 6 MiB segment
  CHECK(f.allocator->stats().cache_hits == 1);
}

TEST_CASE("cuda allocator: allocations may outlive the allocator") {
  auto device = std::make_shared<FakeDevice>();
  device->capacity = 64 * MiB;
  Allocation survivor;
  {
    CachingAllocator allocator(std::make_unique<FakeSource>(device));
    AllocationOptions options;
    Allocation cached = allocator.allocate(1000, options, nullptr);
    survivor = allocator.allocate(3 * MiB, options, nullptr);
    cached = Allocation();
  }  // the allocator gives back the segment that only held the cached block
  CHECK(device->live.size() == 1);
  std::memset(survivor.data, 1, survivor.nbytes);  // still valid memory
  survivor = Allocation();
  CHECK(device->live.empty());  // the last block took its segment with it
}

// ------------------------------------------------------ on a real GPU --

TEST_CASE("cuda allocator: device tensors come from the caching allocator") {
  test::skip_unless_cuda_device();
  const Device gpu = Device::cuda(0);
  const cuda::MemoryStats before = cuda::memory_stats(0);
  {
    Tensor t = empty({1000, 1000}, TensorOptions(DType::f32).with_device(gpu));
    const cuda::MemoryStats during = cuda::memory_stats(0);
    CHECK(during.active_bytes >= before.active_bytes + 4000000);
    CHECK(reinterpret_cast<uintptr_t>(t.data_ptr()) % 256 == 0);
  }
  const cuda::MemoryStats after = cuda::memory_stats(0);
  CHECK(after.active_bytes == before.active_bytes);
  CHECK(after.reserved_bytes >= after.active_bytes + 4000000);  // kept in the cache
  cuda::clear_cache(0);
  CHECK(cuda::memory_stats(0).reserved_bytes < after.reserved_bytes);
  cuda::reset_peak_memory(0);
  CHECK(cuda::memory_stats(0).peak_active_bytes == cuda::memory_stats(0).active_bytes);
}

TEST_CASE("cuda allocator: device misalignment and a clear out-of-memory error") {
  test::skip_unless_cuda_device();
  const Device gpu = Device::cuda(0);
  AllocationOptions options = default_allocation(gpu);
  options.misalignment = 16;
  Allocation a = allocate(1 << 20, gpu, options);
  CHECK(reinterpret_cast<uintptr_t>(a.data) % 256 == 16);
  // Data round-trips through the misaligned block.
  std::vector<float> host(1000);
  for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<float>(i) * 0.5f;
  copy_bytes_cuda(a.data, gpu, host.data(), Device::cpu(), host.size() * sizeof(float));
  std::vector<float> back(host.size(), -1.0f);
  copy_bytes_cuda(back.data(), Device::cpu(), a.data, gpu, back.size() * sizeof(float));
  CHECK(back == host);
  // More than any GPU has: the message says how much was asked and is free.
  const size_t absurd = size_t{1} << 50;
  try {
    allocate(absurd, gpu, default_allocation(gpu));
    FAIL("expected an out-of-memory error");
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    CHECK(message.find("out of memory on cuda:0") != std::string::npos);
    CHECK(message.find("asked for " + std::to_string(absurd) + " bytes") != std::string::npos);
    CHECK(message.find("bytes free") != std::string::npos);
  }
}
