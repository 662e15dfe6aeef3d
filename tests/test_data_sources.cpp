// open_data: --data takes a CIFAR-10 binary directory, an image folder with
// train/ and test/, or "synthetic"; the default finds data/cifar-10-batches-bin
// or falls back to synthetic data with a loud notice; the training files are
// split seeded into train and validation, with optional limits.
#include <doctest/doctest.h>

#include <iostream>
#include <sstream>

#include "data/cifar10_binary.h"
#include "data/sources.h"
#include "data/synthetic.h"
#include "tests/test_data_util.h"

using namespace b3;
using test::TempDir;

namespace {

// Captures std::cerr while alive.
class CaptureStderr {
 public:
  CaptureStderr() : old_(std::cerr.rdbuf(buffer_.rdbuf())) {}
  ~CaptureStderr() { std::cerr.rdbuf(old_); }
  std::string text() const { return buffer_.str(); }

 private:
  std::stringstream buffer_;
  std::streambuf* old_;
};

DataOptions small_options() {
  DataOptions options;
  options.validation_size = 20;
  options.synthetic_train_size = 120;
  options.synthetic_test_size = 30;
  options.allow_download = false;
  return options;
}

}  // namespace

TEST_CASE("sources: synthetic data is split into train and validation, test apart") {
  const DataSplits splits = open_data("synthetic", small_options());
  CHECK(splits.synthetic);
  CHECK(splits.train->size() == 100);
  CHECK(splits.validation->size() == 20);
  CHECK(splits.test->size() == 30);
  CHECK(splits.description.find("SYNTHETIC") != std::string::npos);
  CHECK(splits.description.find("100 train / 20 validation") != std::string::npos);
  // Test images are other examples than the training ones (same class patterns).
  std::vector<uint8_t> a(3072), b(3072);
  const SyntheticDataset all(150);
  splits.test->get(0, a.data());
  all.get(120, b.data());
  CHECK(a == b);
}

TEST_CASE("sources: limits keep the first examples, validation 0 gives no validation set") {
  DataOptions options = small_options();
  options.train_limit = 32;
  options.test_limit = 7;
  DataSplits splits = open_data("synthetic", options);
  CHECK(splits.train->size() == 32);
  CHECK(splits.test->size() == 7);
  CHECK(splits.description.find("limited to the first 32") != std::string::npos);
  options.validation_size = 0;
  splits = open_data("synthetic", options);
  CHECK(splits.validation == nullptr);
  options.validation_size = 120;
  CHECK_THROWS_WITH_AS(
      open_data("synthetic", options),
      doctest::Contains("validation size 120 leaves no training images out of 120"),
      std::invalid_argument);
}

TEST_CASE("sources: a CIFAR-10 binary directory and an image folder are recognized") {
  TempDir tmp;
  write_cifar10_binary(SyntheticDataset(30), SyntheticDataset(10, {32, 32, 3}, 10, 0, 30),
                       tmp / "bin");
  DataOptions options = small_options();
  options.validation_size = 5;
  DataSplits splits = open_data(tmp / "bin", options);
  CHECK_FALSE(splits.synthetic);
  CHECK(splits.train->size() == 25);
  CHECK(splits.validation->size() == 5);
  CHECK(splits.test->size() == 10);
  CHECK(splits.description.find("CIFAR-10 binary files in " + (tmp / "bin")) != std::string::npos);

  for (int i = 0; i < 6; ++i) {
    test::write_image(
        tmp / ("folder/train/c" + std::to_string(i % 2) + "/" + std::to_string(i) + ".png"), 8, 8,
        test::random_images(1, 1, 192));
  }
  test::write_image(tmp / "folder/test/c0/a.png", 8, 8, test::random_images(1, 2, 192));
  test::write_image(tmp / "folder/test/c1/a.png", 8, 8, test::random_images(1, 3, 192));
  options.validation_size = 2;
  splits = open_data(tmp / "folder", options);
  CHECK(splits.train->size() == 4);
  CHECK(splits.test->size() == 2);
  CHECK(splits.train->image_shape() == ImageShape{8, 8, 3});
  CHECK(splits.train->class_names() == std::vector<std::string>{"c0", "c1"});
  CHECK(splits.description.find("image folders in") != std::string::npos);
}

TEST_CASE("sources: the default finds <root>/cifar-10-batches-bin") {
  TempDir tmp;
  write_cifar10_binary(SyntheticDataset(30), SyntheticDataset(10), tmp / "cifar-10-batches-bin");
  DataOptions options = small_options();
  options.default_root = tmp.str();
  options.validation_size = 5;
  const DataSplits splits = open_data("", options);
  CHECK_FALSE(splits.synthetic);
  CHECK(splits.train->size() == 25);
  CHECK(splits.description.find(tmp / "cifar-10-batches-bin") != std::string::npos);
}

TEST_CASE("sources: without data the default falls back to synthetic with a loud notice") {
  TempDir tmp;
  DataOptions options = small_options();
  options.default_root = tmp / "nothing-here";
  CaptureStderr captured;
  const DataSplits splits = open_data("", options);
  CHECK(splits.synthetic);
  CHECK(splits.train->size() == 100);
  const std::string notice = captured.text();
  CHECK(notice.find("USING SYNTHETIC DATA") != std::string::npos);
  CHECK(notice.find(tmp / "nothing-here") != std::string::npos);
  CHECK(notice.find("b3 data download") != std::string::npos);
}
