// DataLoader: the epoch order follows (seed, epoch) only (golden values pin it
// across machines), every example comes once per epoch, drop_last drops the
// partial batch, the batches are identical whatever the number of workers and
// prefetch depth, worker exceptions reach next(), and destruction mid-epoch
// stops and joins the workers promptly. LoaderBatchSource (loader + transform)
// gives the same batches whatever the number of workers.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <numeric>
#include <stdexcept>
#include <thread>

#include "data/loader.h"
#include "data/loader_source.h"
#include "data/synthetic.h"

using namespace b3;

namespace {

// Every batch of one epoch: images' bytes, labels, indices.
struct EpochRecord {
  std::vector<std::vector<uint8_t>> images;
  std::vector<std::vector<int64_t>> labels;
  std::vector<std::vector<int64_t>> indices;
  bool operator==(const EpochRecord&) const = default;
};

EpochRecord record_epoch(DataLoader& loader, int64_t epoch) {
  EpochRecord record;
  loader.start_epoch(epoch);
  while (auto batch = loader.next()) {
    const uint8_t* p = batch->images.data<uint8_t>();
    record.images.emplace_back(p, p + batch->images.numel());
    const int64_t* l = batch->labels.data<int64_t>();
    record.labels.emplace_back(l, l + batch->labels.numel());
    record.indices.push_back(batch->indices);
  }
  return record;
}

// A dataset whose get() is slow, or throws for one index.
class TestDataset : public Dataset {
 public:
  TestDataset(int64_t size, int64_t failing_index = -1, int sleep_us = 0)
      : size_(size), failing_index_(failing_index), sleep_us_(sleep_us) {}
  int64_t size() const override { return size_; }
  ImageShape image_shape() const override { return {2, 2, 3}; }
  std::vector<std::string> class_names() const override { return {"a", "b", "c"}; }
  int64_t get(int64_t index, uint8_t* pixels) const override {
    if (sleep_us_ > 0) std::this_thread::sleep_for(std::chrono::microseconds(sleep_us_));
    if (index == failing_index_) {
      throw std::runtime_error("TestDataset: example " + std::to_string(index) + " is broken");
    }
    for (int k = 0; k < 12; ++k) pixels[k] = static_cast<uint8_t>(index + k);
    ++gets;
    return index % 3;
  }
  mutable std::atomic<int64_t> gets{0};

 private:
  int64_t size_, failing_index_;
  int sleep_us_;
};

LoaderOptions options_with(int64_t batch, bool shuffle, bool drop_last, int workers,
                           int prefetch = 4, uint64_t seed = 0) {
  LoaderOptions o;
  o.batch_size = batch;
  o.shuffle = shuffle;
  o.drop_last = drop_last;
  o.num_workers = workers;
  o.prefetch = prefetch;
  o.seed = seed;
  return o;
}

}  // namespace

TEST_CASE("loader: the epoch order depends only on seed and epoch (golden values)") {
  // Golden orders, computed by an independent Python implementation of
  // xoshiro256** + Fisher-Yates with the same epoch seed mixing.
  CHECK(DataLoader::order_for_epoch(10, true, 0, 0) ==
        std::vector<int64_t>{2, 6, 4, 0, 1, 5, 3, 7, 8, 9});
  CHECK(DataLoader::order_for_epoch(10, true, 0, 1) ==
        std::vector<int64_t>{8, 4, 3, 5, 0, 6, 9, 2, 7, 1});
  CHECK(DataLoader::order_for_epoch(10, true, 1, 0) != DataLoader::order_for_epoch(10, true, 0, 0));
  CHECK(DataLoader::order_for_epoch(5, false, 3, 7) == std::vector<int64_t>{0, 1, 2, 3, 4});
  auto data = std::make_shared<TestDataset>(10);
  DataLoader loader(data, options_with(4, true, false, 2));
  loader.start_epoch(1);
  CHECK(loader.epoch_order() == DataLoader::order_for_epoch(10, true, 0, 1));
  const auto batch = loader.next();
  REQUIRE(batch);
  CHECK(batch->indices == std::vector<int64_t>{8, 4, 3, 5});
}

TEST_CASE("loader: batches hold the dataset's examples in the epoch's order, NHWC uint8") {
  auto data = std::make_shared<SyntheticDataset>(37, ImageShape{5, 4, 3}, 10, 2);
  DataLoader loader(data, options_with(8, true, false, 2));
  loader.start_epoch(0);
  const std::vector<int64_t> order = loader.epoch_order();
  std::vector<uint8_t> expected(60);
  int64_t position = 0, batches = 0;
  while (auto batch = loader.next()) {
    CHECK(batch->batch_index == batches);
    ++batches;
    CHECK(batch->images.dtype() == DType::u8);
    CHECK(batch->images.shape() == Shape{batch->size(), 3, 5, 4});
    CHECK(batch->images.is_contiguous(MemoryFormat::channels_last));
    CHECK(batch->labels.dtype() == DType::i64);
    CHECK(batch->labels.shape() == Shape{batch->size()});
    for (int64_t k = 0; k < batch->size(); ++k, ++position) {
      const int64_t index = order[static_cast<size_t>(position)];
      CHECK(batch->indices[static_cast<size_t>(k)] == index);
      CHECK(batch->labels.data<int64_t>()[k] == data->get(index, expected.data()));
      CHECK(std::equal(expected.begin(), expected.end(), batch->images.data<uint8_t>() + k * 60));
    }
  }
  CHECK(batches == 5);  // 8, 8, 8, 8, 5
  CHECK(position == 37);
  CHECK_FALSE(loader.next());  // stays over
}

TEST_CASE("loader: every example once per epoch, drop_last drops only the partial batch") {
  auto data = std::make_shared<TestDataset>(103);
  for (bool drop_last : {false, true}) {
    CAPTURE(drop_last);
    DataLoader loader(data, options_with(10, true, drop_last, 3));
    CHECK(loader.batches_per_epoch() == (drop_last ? 10 : 11));
    const EpochRecord epoch = record_epoch(loader, 4);
    REQUIRE(static_cast<int64_t>(epoch.indices.size()) == loader.batches_per_epoch());
    std::vector<int64_t> seen;
    for (const auto& indices : epoch.indices)
      seen.insert(seen.end(), indices.begin(), indices.end());
    CHECK(epoch.indices.back().size() == (drop_last ? 10u : 3u));
    std::vector<int64_t> sorted = seen;
    std::sort(sorted.begin(), sorted.end());
    CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());  // no repeats
    CHECK(seen.size() == (drop_last ? 100u : 103u));
    // The examples dropped are the last 3 of the epoch's order.
    const std::vector<int64_t> order = DataLoader::order_for_epoch(103, true, 0, 4);
    CHECK(std::equal(seen.begin(), seen.end(), order.begin()));
  }
}

TEST_CASE("loader: the same batches with 0, 1 or 3 workers and any prefetch depth") {
  auto data = std::make_shared<SyntheticDataset>(50, ImageShape{6, 6, 3}, 10, 5);
  DataLoader reference(data, options_with(7, true, true, 0, 1, 11));
  const EpochRecord expected0 = record_epoch(reference, 0);
  const EpochRecord expected1 = record_epoch(reference, 1);
  CHECK(expected0.indices != expected1.indices);
  for (int workers : {1, 3}) {
    for (int prefetch : {1, 2, 8}) {
      CAPTURE(workers);
      CAPTURE(prefetch);
      DataLoader loader(data, options_with(7, true, true, workers, prefetch, 11));
      CHECK(record_epoch(loader, 0) == expected0);
      CHECK(record_epoch(loader, 1) == expected1);
    }
  }
}

TEST_CASE("loader: start_epoch in the middle of an epoch starts the new one cleanly") {
  auto data = std::make_shared<TestDataset>(64);
  DataLoader fresh(data, options_with(4, true, false, 2));
  const EpochRecord expected = record_epoch(fresh, 1);
  DataLoader loader(data, options_with(4, true, false, 2));
  loader.start_epoch(0);
  REQUIRE(loader.next());
  REQUIRE(loader.next());
  CHECK(record_epoch(loader, 1) == expected);
}

TEST_CASE("loader: an exception in a worker is re-thrown by next(), and again after") {
  for (int workers : {0, 2}) {
    CAPTURE(workers);
    auto data = std::make_shared<TestDataset>(40, 13);
    DataLoader loader(data, options_with(4, false, false, workers));
    loader.start_epoch(0);
    // Examples 0-11 are fine: batches 0, 1, 2. Batch 3 holds example 13.
    for (int b = 0; b < 3; ++b) REQUIRE(loader.next());
    CHECK_THROWS_WITH_AS(loader.next(), doctest::Contains("example 13 is broken"),
                         std::runtime_error);
    CHECK_THROWS_WITH_AS(loader.next(), doctest::Contains("example 13 is broken"),
                         std::runtime_error);
    loader.start_epoch(1);  // a new epoch starts afresh (and fails at the same place)
    REQUIRE(loader.next());
  }
}

TEST_CASE("loader: a label outside the classes is an error, next() before start_epoch too") {
  class BadLabels : public TestDataset {
   public:
    BadLabels() : TestDataset(4) {}
    int64_t get(int64_t index, uint8_t* pixels) const override {
      TestDataset::get(index, pixels);
      return index == 2 ? 7 : 0;
    }
  };
  DataLoader loader(std::make_shared<BadLabels>(), options_with(4, false, false, 1));
  CHECK_THROWS_WITH_AS(loader.next(), doctest::Contains("call start_epoch"), std::logic_error);
  loader.start_epoch(0);
  CHECK_THROWS_WITH_AS(loader.next(), doctest::Contains("example 2 has label 7"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(DataLoader(nullptr, LoaderOptions{}), doctest::Contains("null"),
                       std::invalid_argument);
  auto data = std::make_shared<TestDataset>(4);
  CHECK_THROWS_WITH_AS(DataLoader(data, options_with(2, true, false, -1)),
                       doctest::Contains("num_workers must be >= 0, got -1"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(DataLoader(data, options_with(2, true, false, 1, 0)),
                       doctest::Contains("prefetch must be >= 1, got 0"), std::invalid_argument);
}

TEST_CASE("loader: destroying it mid-epoch stops the workers promptly") {
  // 1 ms per example, batches of 8: a batch takes ~8 ms. The workers run at
  // most `prefetch` batches ahead, so after one batch they stop asking for work,
  // and destruction waits at most for the batches in progress.
  auto data = std::make_shared<TestDataset>(4000, -1, 1000);
  const auto start = std::chrono::steady_clock::now();
  {
    DataLoader loader(data, options_with(8, true, false, 3, 2));
    loader.start_epoch(0);
    REQUIRE(loader.next());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }  // ~DataLoader joins here
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // Bounded prefetch: 1 delivered + at most 2 ahead + 3 in progress, far from 4,000.
  CHECK(data->gets.load() <= 8 * 6);
  // Generous for a loaded 2-core machine; an unjoined or runaway loader takes 4 s.
  CHECK(seconds < 1.5);
  // Never started: destruction is immediate too.
  { DataLoader idle(data, options_with(8, true, false, 2)); }
}

TEST_CASE("loader: LoaderBatchSource yields transformed batches, the same for any worker count") {
  auto data = std::make_shared<SyntheticDataset>(40, ImageShape{32, 32, 3}, 10, 1);
  TransformOptions transform;
  transform.resize = 36;
  transform.crop = 32;
  transform.random_crop = true;
  transform.horizontal_flip = true;
  transform.format = MemoryFormat::channels_last;
  auto run_epoch = [&](int workers, int64_t epoch) {
    LoaderBatchSource source(data, options_with(16, true, true, workers), transform, 5);
    CHECK(source.batches_per_epoch() == 2);
    source.start_epoch(epoch);
    std::vector<double> values;
    while (auto batch = source.next()) {
      CHECK(batch->images.shape() == Shape{16, 3, 32, 32});
      CHECK(batch->images.dtype() == DType::f32);
      CHECK(batch->images.is_contiguous(MemoryFormat::channels_last));
      CHECK(batch->labels.shape() == Shape{16});
      const std::vector<double> v = batch->images.to_doubles();
      values.insert(values.end(), v.begin(), v.end());
    }
    return values;
  };
  const std::vector<double> serial = run_epoch(0, 3);
  CHECK(serial.size() == 2u * 16 * 3 * 32 * 32);
  CHECK(run_epoch(2, 3) == serial);
  CHECK(run_epoch(0, 4) != serial);  // another epoch: another order and other crops
  CHECK(*std::max_element(serial.begin(), serial.end()) <= 1.0);
  // A transform that cannot fit the images fails at construction.
  transform.crop = 40;
  CHECK_THROWS_WITH_AS(LoaderBatchSource(data, options_with(16, true, true, 0), transform),
                       doctest::Contains("crop 40 is larger than the resized image 36x36"),
                       std::invalid_argument);
}
