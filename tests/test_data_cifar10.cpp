// CIFAR-10 binary files: records become HWC images with the right labels,
// the directory may be the batches folder or its parent, batches.meta.txt
// names the classes, and the writer's files read back identically.
// (Bad files are in test_data_errors.cpp.)
#include <doctest/doctest.h>

#include <filesystem>

#include "data/cifar10_binary.h"
#include "data/synthetic.h"
#include "tests/test_data_util.h"

using namespace b3;
using test::TempDir;

namespace {

// Writes data_batch_1..5.bin (records_per_file each) and test_batch.bin into
// `dir`; returns the HWC images of the training split in file order.
std::vector<uint8_t> write_tiny_cifar(const std::string& dir, int records_per_file,
                                      std::vector<int>& train_labels, int test_records = 3) {
  std::vector<uint8_t> all;
  for (int f = 1; f <= 5; ++f) {
    const std::vector<uint8_t> images = test::random_images(records_per_file, 100 + f);
    std::vector<int> labels;
    for (int r = 0; r < records_per_file; ++r) labels.push_back((f * 7 + r * 3) % 10);
    test::write_bytes(dir + "/data_batch_" + std::to_string(f) + ".bin",
                      test::cifar_records(images, labels));
    all.insert(all.end(), images.begin(), images.end());
    train_labels.insert(train_labels.end(), labels.begin(), labels.end());
  }
  std::vector<int> test_labels;
  for (int r = 0; r < test_records; ++r) test_labels.push_back(9 - r);
  test::write_bytes(dir + "/test_batch.bin",
                    test::cifar_records(test::random_images(test_records, 7), test_labels));
  return all;
}

}  // namespace

TEST_CASE("cifar10: records are read as HWC images with their labels, files in order") {
  TempDir tmp;
  std::vector<int> labels;
  const std::vector<uint8_t> images = write_tiny_cifar(tmp.str(), 4, labels);
  const auto train = Cifar10Binary::open(tmp.str(), "train");
  REQUIRE(train->size() == 20);
  CHECK(train->image_shape() == ImageShape{32, 32, 3});
  CHECK(train->class_names() == cifar10_class_names());
  CHECK(train->class_names().front() == "airplane");
  CHECK(train->class_names().back() == "truck");
  std::vector<uint8_t> pixels(3072);
  for (int64_t i = 0; i < train->size(); ++i) {
    CAPTURE(i);
    CHECK(train->get(i, pixels.data()) == labels[static_cast<size_t>(i)]);
    CHECK(train->label(i) == labels[static_cast<size_t>(i)]);
    // Pixel (y, x) channel c of the HWC image is byte 1 + c*1024 + y*32 + x of the record.
    CHECK(std::equal(pixels.begin(), pixels.end(), images.begin() + i * 3072));
  }
  const auto test_split = Cifar10Binary::open(tmp.str(), "test");
  CHECK(test_split->size() == 3);
  CHECK(test_split->label(0) == 9);
  CHECK(test_split->label(2) == 7);
  CHECK(count_per_class(*test_split) == std::vector<int64_t>{0, 0, 0, 0, 0, 0, 0, 1, 1, 1});
}

TEST_CASE("cifar10: one pixel lands where the format says (R, G, B planes)") {
  TempDir tmp;
  std::vector<uint8_t> record(3073, 0);
  record[0] = 4;                             // label
  record[1 + 0 * 1024 + 2 * 32 + 5] = 11;    // R of (y=2, x=5)
  record[1 + 1 * 1024 + 2 * 32 + 5] = 22;    // G
  record[1 + 2 * 1024 + 31 * 32 + 31] = 33;  // B of (y=31, x=31)
  test::write_bytes(tmp / "test_batch.bin", record);
  const auto data = Cifar10Binary::open(tmp.str(), "test");
  std::vector<uint8_t> pixels(3072);
  CHECK(data->get(0, pixels.data()) == 4);
  CHECK(pixels[(2 * 32 + 5) * 3 + 0] == 11);
  CHECK(pixels[(2 * 32 + 5) * 3 + 1] == 22);
  CHECK(pixels[(31 * 32 + 31) * 3 + 2] == 33);
  CHECK(pixels[(2 * 32 + 5) * 3 + 2] == 0);
}

TEST_CASE("cifar10: the directory may be cifar-10-batches-bin or its parent") {
  TempDir tmp;
  std::vector<int> labels;
  write_tiny_cifar(tmp / "cifar-10-batches-bin", 2, labels);
  CHECK(find_cifar10_batches_dir(tmp.str()) == tmp / "cifar-10-batches-bin");
  CHECK(find_cifar10_batches_dir(tmp / "cifar-10-batches-bin") == tmp / "cifar-10-batches-bin");
  CHECK(find_cifar10_batches_dir(tmp / "cifar-10-batches-bin/nothing").empty());
  CHECK(Cifar10Binary::open(tmp.str(), "train")->size() == 10);
  CHECK(Cifar10Binary::open(tmp / "cifar-10-batches-bin", "train")->size() == 10);
  CHECK_THROWS_WITH_AS(Cifar10Binary::open(tmp.str(), "validation"),
                       test::contains("split 'validation'"), std::invalid_argument);
}

TEST_CASE("cifar10: batches.meta.txt names the classes and blank lines are ignored") {
  TempDir tmp;
  std::vector<int> labels;
  write_tiny_cifar(tmp.str(), 1, labels);
  const std::string meta = "zero\none\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\n\n";
  test::write_bytes(tmp / "batches.meta.txt", std::vector<uint8_t>(meta.begin(), meta.end()));
  const auto data = Cifar10Binary::open(tmp.str(), "train");
  REQUIRE(data->num_classes() == 10);
  CHECK(data->class_names()[0] == "zero");
  CHECK(data->class_names()[9] == "nine");
}

TEST_CASE("cifar10: the writer's files read back to the same images and labels") {
  TempDir tmp;
  // 23 images: 5 training files of 5, 5, 5, 4, 4 records.
  const SyntheticDataset train(23, {32, 32, 3}, 10, 3);
  const SyntheticDataset test_set(6, {32, 32, 3}, 10, 3, 23);
  write_cifar10_binary(train, test_set, tmp / "out");
  CHECK(std::filesystem::file_size(tmp / "out/data_batch_1.bin") == 5 * 3073);
  CHECK(std::filesystem::file_size(tmp / "out/data_batch_5.bin") == 4 * 3073);
  CHECK(std::filesystem::file_size(tmp / "out/test_batch.bin") == 6 * 3073);
  CHECK_FALSE(std::filesystem::exists(tmp / "out/data_batch_1.bin.partial"));
  const auto read_train = Cifar10Binary::open(tmp / "out", "train");
  const auto read_test = Cifar10Binary::open(tmp / "out", "test");
  REQUIRE(read_train->size() == 23);
  REQUIRE(read_test->size() == 6);
  CHECK(read_train->class_names() == train.class_names());  // through batches.meta.txt
  std::vector<uint8_t> expected(3072), actual(3072);
  for (int64_t i = 0; i < 23; ++i) {
    CHECK(read_train->get(i, actual.data()) == train.get(i, expected.data()));
    CHECK(actual == expected);
  }
  for (int64_t i = 0; i < 6; ++i) {
    CHECK(read_test->get(i, actual.data()) == test_set.get(i, expected.data()));
    CHECK(actual == expected);
  }
}

TEST_CASE("cifar10: the writer refuses what the format cannot hold") {
  TempDir tmp;
  CHECK_THROWS_WITH_AS(write_cifar10_batches(SyntheticDataset(3, {16, 16, 3}), {tmp / "a.bin"}),
                       test::contains("images are 16x16x3"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(write_cifar10_batches(SyntheticDataset(3, {32, 32, 3}, 11), {tmp / "a.bin"}),
                       test::contains("11 classes"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(write_cifar10_binary(SyntheticDataset(4), SyntheticDataset(2), tmp / "out"),
                       test::contains("at least 5"), std::invalid_argument);
  CHECK_FALSE(std::filesystem::exists(tmp / "a.bin"));
  CHECK_FALSE(std::filesystem::exists(tmp / "out/data_batch_1.bin"));
}
