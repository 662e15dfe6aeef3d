// Every bad input the data issue names gives an error that names the file or
// argument (and, through build/b3, exits non-zero): a missing directory, a
// missing batch file, a file whose size is not a multiple of 3,073 bytes, a
// label byte above 9, an empty class folder, a non-image file, a corrupt image,
// an image of the wrong size for conversion, a batch size of 0 or larger than
// the dataset. Never a crash, never a silent skip.
#include <doctest/doctest.h>

#include <filesystem>

#include "data/cifar10_binary.h"
#include "data/convert.h"
#include "data/image_folder.h"
#include "data/loader.h"
#include "data/sources.h"
#include "data/synthetic.h"
#include "tests/test_data_util.h"

using namespace b3;
using test::TempDir;

namespace {

void write_good_cifar(const std::string& dir, int records = 2) {
  std::vector<int> labels(static_cast<size_t>(records), 3);
  for (int f = 1; f <= 5; ++f) {
    test::write_bytes(dir + "/data_batch_" + std::to_string(f) + ".bin",
                      test::cifar_records(test::random_images(records, f), labels));
  }
  test::write_bytes(dir + "/test_batch.bin",
                    test::cifar_records(test::random_images(records, 9), labels));
}

void write_png(const std::string& path, int side = 32) {
  test::write_image(path, side, side, test::random_images(1, 1, int64_t{side} * side * 3));
}

}  // namespace

TEST_CASE("bad input: a missing directory is named") {
  TempDir tmp;
  const std::string missing = tmp / "no-such-dir";
  CHECK_THROWS_WITH_AS(Cifar10Binary::open(missing, "train"),
                       test::contains("directory '" + missing + "' does not exist"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(ImageFolder::open(missing),
                       test::contains("directory '" + missing + "' does not exist"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(open_data(missing), test::contains("--data '" + missing + "'"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(convert_image_folder_to_cifar10(missing, tmp / "out"),
                       test::contains("--from '" + missing + "'"), std::runtime_error);
}

TEST_CASE("bad input: a directory that is neither format is named") {
  TempDir tmp;
  std::filesystem::create_directories(tmp / "empty");
  CHECK_THROWS_WITH_AS(open_data(tmp / "empty"),
                       test::contains("--data '" + (tmp / "empty") + "': neither"),
                       std::runtime_error);
}

TEST_CASE("bad input: a missing batch file is named") {
  TempDir tmp;
  write_good_cifar(tmp.str());
  std::filesystem::remove(tmp / "data_batch_3.bin");
  CHECK_THROWS_WITH_AS(Cifar10Binary::open(tmp.str(), "train"),
                       test::contains("missing batch file '" + (tmp / "data_batch_3.bin") + "'"),
                       std::runtime_error);
  CHECK(Cifar10Binary::open(tmp.str(), "test")->size() == 2);  // the test split is complete
  std::filesystem::remove(tmp / "test_batch.bin");
  CHECK_THROWS_WITH_AS(Cifar10Binary::open(tmp.str(), "test"),
                       test::contains("missing batch file '" + (tmp / "test_batch.bin") + "'"),
                       std::runtime_error);
}

TEST_CASE("bad input: a file whose size is not a multiple of 3,073 bytes is named") {
  TempDir tmp;
  write_good_cifar(tmp.str());
  std::vector<uint8_t> bytes = test::cifar_records(test::random_images(2, 5), {1, 2});
  bytes.pop_back();  // truncated by one byte: 6,145 bytes
  test::write_bytes(tmp / "data_batch_2.bin", bytes);
  CHECK_THROWS_WITH_AS(Cifar10Binary::open(tmp.str(), "train"),
                       test::contains("'" + (tmp / "data_batch_2.bin") +
                                      "' has 6145 bytes, not a multiple of the 3,073-byte"),
                       std::runtime_error);
  test::write_bytes(tmp / "data_batch_2.bin", {});
  CHECK_THROWS_WITH_AS(Cifar10Binary::open(tmp.str(), "train"),
                       test::contains("'" + (tmp / "data_batch_2.bin") + "' is empty"),
                       std::runtime_error);
}

TEST_CASE("bad input: a label byte above 9 is named with its file and record") {
  TempDir tmp;
  write_good_cifar(tmp.str());
  test::write_bytes(tmp / "test_batch.bin",
                    test::cifar_records(test::random_images(3, 5), {0, 9, 10}));
  CHECK_THROWS_WITH_AS(
      Cifar10Binary::open(tmp.str(), "test"),
      test::contains("'" + (tmp / "test_batch.bin") + "' record 2 (byte offset 6146) has label 10"),
      std::runtime_error);
  test::write_bytes(tmp / "test_batch.bin", test::cifar_records(test::random_images(1, 5), {255}));
  CHECK_THROWS_WITH_AS(Cifar10Binary::open(tmp.str(), "test"),
                       test::contains("has label 255; labels must be 0 to 9"), std::runtime_error);
}

TEST_CASE("bad input: an empty class folder is named") {
  TempDir tmp;
  write_png(tmp / "root/cat/1.png");
  std::filesystem::create_directories(tmp / "root/dog");
  CHECK_THROWS_WITH_AS(
      ImageFolder::open(tmp / "root"),
      test::contains("class folder '" + (tmp / "root/dog") + "' holds no image files"),
      std::runtime_error);
  std::filesystem::create_directories(tmp / "no-classes");
  CHECK_THROWS_WITH_AS(ImageFolder::open(tmp / "no-classes"),
                       test::contains("has no class folders"), std::runtime_error);
}

TEST_CASE("bad input: a non-image file in a class folder is named") {
  TempDir tmp;
  write_png(tmp / "root/cat/1.png");
  const std::string text = "not an image";
  test::write_bytes(tmp / "root/cat/notes.txt", std::vector<uint8_t>(text.begin(), text.end()));
  CHECK_THROWS_WITH_AS(
      ImageFolder::open(tmp / "root"),
      test::contains("'" + (tmp / "root/cat/notes.txt") + "' is not an image file"),
      std::runtime_error);
}

TEST_CASE("bad input: a corrupt or fake image file is named") {
  TempDir tmp;
  write_png(tmp / "root/cat/1.png");
  write_png(tmp / "root/cat/2.png");
  // Text under an image name.
  const std::string text = "this is not a PNG";
  test::write_bytes(tmp / "root/cat/3.png", std::vector<uint8_t>(text.begin(), text.end()));
  CHECK_THROWS_WITH_AS(ImageFolder::open(tmp / "root"),
                       test::contains("cannot decode image '" + (tmp / "root/cat/3.png") + "'"),
                       std::runtime_error);
  // A real JPEG cut in half.
  std::filesystem::remove(tmp / "root/cat/3.png");
  test::write_image(tmp / "whole.jpg", 32, 32, test::random_images(1, 3));
  const std::string whole = test::read_text(tmp / "whole.jpg");
  REQUIRE(whole.size() > 300);
  test::write_bytes(tmp / "root/cat/0.jpg",
                    std::vector<uint8_t>(whole.begin(), whole.begin() + 300));
  CHECK_THROWS_WITH_AS(ImageFolder::open(tmp / "root"),
                       test::contains("cannot decode image '" + (tmp / "root/cat/0.jpg") + "'"),
                       std::runtime_error);
  // An empty file.
  std::filesystem::remove(tmp / "root/cat/0.jpg");
  test::write_bytes(tmp / "root/cat/4.bmp", {});
  CHECK_THROWS_WITH_AS(ImageFolder::open(tmp / "root"),
                       test::contains("'" + (tmp / "root/cat/4.bmp") + "': the file is empty"),
                       std::runtime_error);
}

TEST_CASE("bad input: images of different sizes in one folder are named") {
  TempDir tmp;
  write_png(tmp / "root/cat/1.png", 32);
  write_png(tmp / "root/dog/1.png", 30);
  CHECK_THROWS_WITH_AS(ImageFolder::open(tmp / "root"),
                       test::contains("image '" + (tmp / "root/dog/1.png") + "' is 30x30x3"),
                       std::runtime_error);
}

TEST_CASE("bad input: an image of the wrong size for conversion is named and nothing is written") {
  TempDir tmp;
  write_png(tmp / "from/train/cat/1.png", 32);
  write_png(tmp / "from/train/cat/2.png", 32);
  write_png(tmp / "from/test/cat/1.png", 32);
  // All 64x64 in the second class: consistent for ImageFolder, wrong for CIFAR-10.
  write_png(tmp / "from/train/dog/1.png", 64);
  write_png(tmp / "from/test/dog/1.png", 64);
  CHECK_THROWS_WITH_AS(convert_image_folder_to_cifar10(tmp / "from", tmp / "out"),
                       test::contains("image '" + (tmp / "from/train/dog/1.png") +
                                      "' is 64x64x3 (height x width x channels), but this "
                                      "needs 32x32x3"),
                       std::runtime_error);
  CHECK_FALSE(std::filesystem::exists(tmp / "out/data_batch_1.bin"));
  // The first image itself of the wrong size.
  TempDir other;
  write_png(other / "from/train/a/1.png", 16);
  write_png(other / "from/test/a/1.png", 16);
  CHECK_THROWS_WITH_AS(convert_image_folder_to_cifar10(other / "from", other / "out"),
                       test::contains("image '" + (other / "from/train/a/1.png") + "' is 16x16x3"),
                       std::runtime_error);
}

TEST_CASE("bad input: a batch size of 0, or larger than the dataset with drop_last") {
  auto data = std::make_shared<SyntheticDataset>(10);
  LoaderOptions options;
  options.batch_size = 0;
  CHECK_THROWS_WITH_AS(DataLoader(data, options),
                       test::contains("batch size must be positive, got 0"), std::invalid_argument);
  options.batch_size = -3;
  CHECK_THROWS_WITH_AS(DataLoader(data, options), test::contains("got -3"), std::invalid_argument);
  options.batch_size = 11;
  options.drop_last = true;
  CHECK_THROWS_WITH_AS(DataLoader(data, options),
                       test::contains("batch size 11 is larger than the dataset (10 examples)"),
                       std::invalid_argument);
  // Without drop_last (evaluation) a batch larger than the dataset is one short batch.
  options.drop_last = false;
  DataLoader loader(data, options);
  CHECK(loader.batches_per_epoch() == 1);
}

TEST_CASE("bad input: build/b3 names the problem and exits non-zero") {
  TempDir tmp;
  std::string output;
  const std::string missing = tmp / "no-such-dir";
  CHECK(test::run_b3("data info --data " + missing, output, tmp) == 1);
  CHECK(output.find("b3: error:") != std::string::npos);
  CHECK(output.find(missing) != std::string::npos);

  write_png(tmp / "from/train/cat/1.png", 32);
  write_png(tmp / "from/test/cat/1.png", 40);
  CHECK(test::run_b3("data convert --from " + (tmp / "from") + " --to " + (tmp / "out"), output,
                     tmp) == 1);
  CHECK(output.find(tmp / "from/test/cat/1.png") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(tmp / "out/data_batch_1.bin"));

  write_good_cifar(tmp / "cifar");
  test::write_bytes(tmp / "cifar/data_batch_4.bin", {1, 2, 3});
  CHECK(test::run_b3("data info --data " + (tmp / "cifar"), output, tmp) == 1);
  CHECK(output.find(tmp / "cifar/data_batch_4.bin") != std::string::npos);

  // CLI11's own argument errors (a missing required option) exit non-zero too.
  CHECK(test::run_b3("data convert --from " + (tmp / "from"), output, tmp) != 0);
  CHECK(output.find("--to") != std::string::npos);
}
