// SyntheticDataset: deterministic per (seed, index) on any thread, labels
// cycling through the classes, and learnable: a nearest-class-mean classifier
// fitted on a few examples classifies new ones far above chance.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <thread>

#include "data/synthetic.h"

using namespace b3;

TEST_CASE("synthetic: the same seed and index give the same image, on any thread") {
  const SyntheticDataset a(100, {32, 32, 3}, 10, 7);
  const SyntheticDataset b(100, {32, 32, 3}, 10, 7);
  const SyntheticDataset other_seed(100, {32, 32, 3}, 10, 8);
  std::vector<uint8_t> x(3072), y(3072), z(3072);
  for (int64_t i : {0, 1, 57, 99}) {
    CHECK(a.get(i, x.data()) == b.get(i, y.data()));
    CHECK(x == y);
    other_seed.get(i, z.data());
    CHECK(x != z);
  }
  // Four threads reading everything see what one thread sees.
  std::vector<std::vector<uint8_t>> serial(100, std::vector<uint8_t>(3072));
  for (int64_t i = 0; i < 100; ++i) a.get(i, serial[static_cast<size_t>(i)].data());
  std::vector<std::vector<uint8_t>> parallel(100, std::vector<uint8_t>(3072));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int64_t i = t; i < 100; i += 4) a.get(i, parallel[static_cast<size_t>(i)].data());
    });
  }
  for (auto& thread : threads) thread.join();
  CHECK(serial == parallel);
}

TEST_CASE("synthetic: labels cycle through the classes and first_example continues them") {
  const SyntheticDataset train(25, {8, 8, 3}, 4, 1);
  const SyntheticDataset test_set(10, {8, 8, 3}, 4, 1, 25);
  CHECK(train.size() == 25);
  CHECK(train.image_shape() == ImageShape{8, 8, 3});
  CHECK(train.class_names() ==
        std::vector<std::string>{"class_0", "class_1", "class_2", "class_3"});
  CHECK(count_per_class(train) == std::vector<int64_t>{7, 6, 6, 6});
  CHECK(test_set.label(0) == 1);  // example 25 overall
  // The test set continues the training set's examples: test example 0 = training example 25.
  const SyntheticDataset longer(35, {8, 8, 3}, 4, 1);
  std::vector<uint8_t> x(192), y(192);
  CHECK(test_set.get(3, x.data()) == longer.get(28, y.data()));
  CHECK(x == y);
}

TEST_CASE("synthetic: learnable, a nearest-class-mean classifier is far above chance") {
  const int64_t classes = 10;
  const SyntheticDataset train(500, {32, 32, 3}, classes, 3);
  const SyntheticDataset test_set(200, {32, 32, 3}, classes, 3, 500);
  const int64_t bytes = 3072;
  std::vector<double> means(static_cast<size_t>(classes * bytes), 0.0);
  std::vector<uint8_t> pixels(static_cast<size_t>(bytes));
  double lowest = 255, highest = 0;
  for (int64_t i = 0; i < train.size(); ++i) {
    const int64_t y = train.get(i, pixels.data());
    for (int64_t k = 0; k < bytes; ++k) {
      means[static_cast<size_t>(y * bytes + k)] += pixels[static_cast<size_t>(k)] / 50.0;
      lowest = std::min(lowest, static_cast<double>(pixels[static_cast<size_t>(k)]));
      highest = std::max(highest, static_cast<double>(pixels[static_cast<size_t>(k)]));
    }
  }
  CHECK(highest - lowest > 150);  // real contrast, not a flat image
  int64_t correct = 0;
  for (int64_t i = 0; i < test_set.size(); ++i) {
    const int64_t y = test_set.get(i, pixels.data());
    int64_t best = -1;
    double best_distance = std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < classes; ++c) {
      double d = 0;
      for (int64_t k = 0; k < bytes; ++k) {
        const double diff =
            pixels[static_cast<size_t>(k)] - means[static_cast<size_t>(c * bytes + k)];
        d += diff * diff;
      }
      if (d < best_distance) best_distance = d, best = c;
    }
    correct += best == y;
  }
  // Chance is 10%; the class patterns differ by tens of grey levels over
  // 3,072 values while the noise is independent per pixel, so nearly all are right.
  CHECK(correct >= 190);
}

TEST_CASE("synthetic: bad arguments are named") {
  CHECK_THROWS_WITH_AS(SyntheticDataset(-1), doctest::Contains("size must be >= 0, got -1"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(SyntheticDataset(4, {0, 32, 3}), doctest::Contains("image shape 0x32x3"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(SyntheticDataset(4, {32, 32, 3}, 0),
                       doctest::Contains("num_classes must be 1 to 256, got 0"),
                       std::invalid_argument);
  const SyntheticDataset data(4);
  std::vector<uint8_t> pixels(3072);
  CHECK_THROWS_WITH_AS(data.get(4, pixels.data()), doctest::Contains("index 4 is out of range"),
                       std::out_of_range);
}
