// Image folders: classes sorted by folder name, files found recursively in
// sorted order, PNG/BMP decoded exactly and JPEG closely, grayscale turned
// into RGB, and `data convert` to CIFAR-10 binary files reading back the
// same pixels. (Bad folders and files are in test_data_errors.cpp.)
#include <doctest/doctest.h>

#include <stb/stb_image.h>

#include <cmath>
#include <filesystem>

#include "data/cifar10_binary.h"
#include "data/convert.h"
#include "data/image_folder.h"
#include "data/split.h"
#include "tests/test_data_util.h"

using namespace b3;
using test::TempDir;

namespace {

std::vector<uint8_t> image_bytes(int w, int h, uint64_t seed) {
  return test::random_images(1, seed, int64_t{w} * h * 3);
}

// A smooth image (JPEG keeps it within a few grey levels).
std::vector<uint8_t> smooth_image(int w, int h, int phase) {
  std::vector<uint8_t> rgb(static_cast<size_t>(w * h * 3));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        rgb[static_cast<size_t>((y * w + x) * 3 + c)] =
            static_cast<uint8_t>(128 + 60 * std::sin(0.2 * x + 0.3 * y + phase + c));
  return rgb;
}

}  // namespace

TEST_CASE("image folder: classes sorted by name, files sorted, PNG and BMP exact") {
  TempDir tmp;
  const std::string root = tmp / "train";
  // Written out of order on purpose; "b_cat" has a nested folder.
  test::write_image(root + "/c_ship/2.png", 8, 6, image_bytes(8, 6, 1));
  test::write_image(root + "/c_ship/10.bmp", 8, 6, image_bytes(8, 6, 2));
  test::write_image(root + "/a_bird/x.png", 8, 6, image_bytes(8, 6, 3));
  test::write_image(root + "/b_cat/sub/0.png", 8, 6, image_bytes(8, 6, 4));
  test::write_image(root + "/b_cat/z.BMP", 8, 6, image_bytes(8, 6, 5));
  test::write_bytes(root + "/b_cat/.hidden_notes", {1, 2, 3});  // hidden: ignored
  test::write_bytes(root + "/README.txt", {1, 2, 3});           // not in a class folder: ignored

  const auto folder = ImageFolder::open(root);
  CHECK(folder->class_names() == std::vector<std::string>{"a_bird", "b_cat", "c_ship"});
  REQUIRE(folder->size() == 5);
  CHECK(folder->image_shape() == ImageShape{6, 8, 3});
  // torchvision's order: per class, folders by path ("b_cat" before "b_cat/sub"),
  // names sorted as strings ("10.bmp" before "2.png").
  const std::vector<std::string> expected_files{"a_bird/x.png", "b_cat/z.BMP", "b_cat/sub/0.png",
                                                "c_ship/10.bmp", "c_ship/2.png"};
  const std::vector<uint64_t> seeds{3, 5, 4, 2, 1};
  const std::vector<int64_t> labels{0, 1, 1, 2, 2};
  std::vector<uint8_t> pixels(6 * 8 * 3);
  for (int64_t i = 0; i < 5; ++i) {
    CAPTURE(i);
    CHECK(folder->path(i) == root + "/" + expected_files[static_cast<size_t>(i)]);
    CHECK(folder->get(i, pixels.data()) == labels[static_cast<size_t>(i)]);
    CHECK(folder->label(i) == labels[static_cast<size_t>(i)]);
    CHECK(pixels == image_bytes(8, 6, seeds[static_cast<size_t>(i)]));  // lossless formats
  }
  CHECK(count_per_class(*folder) == std::vector<int64_t>{1, 2, 2});
}

TEST_CASE("image folder: JPEG decodes close to the original and grayscale becomes RGB") {
  TempDir tmp;
  const std::vector<uint8_t> original = smooth_image(32, 32, 1);
  test::write_image(tmp / "root/a/img.jpg", 32, 32, original, 100);
  // An 8-bit grayscale PNG: stb_image expands it to R = G = B.
  std::vector<uint8_t> gray(16 * 16);
  for (size_t i = 0; i < gray.size(); ++i) gray[i] = static_cast<uint8_t>(i);
  std::filesystem::create_directories(tmp / "gray/a");
  REQUIRE(stbi_write_png((tmp / "gray/a/g.png").c_str(), 16, 16, 1, gray.data(), 16) != 0);

  const auto jpeg = ImageFolder::open(tmp / "root");
  std::vector<uint8_t> pixels(32 * 32 * 3);
  jpeg->get(0, pixels.data());
  int worst = 0;
  for (size_t i = 0; i < pixels.size(); ++i)
    worst = std::max(worst, std::abs(pixels[i] - original[i]));
  // stb_image_write's quality-100 JPEG (no chroma subsampling above 90) of a
  // smooth image loses only the RGB <-> YCbCr and DCT roundings: 3 levels
  // measured; 6 leaves headroom, while a decoding bug (wrong channel order,
  // shifted rows) would be off by tens of levels.
  CHECK(worst <= 6);

  const auto grey = ImageFolder::open(tmp / "gray");
  CHECK(grey->image_shape() == ImageShape{16, 16, 3});
  std::vector<uint8_t> rgb(16 * 16 * 3);
  grey->get(0, rgb.data());
  CHECK(rgb[3 * 37 + 0] == 37);
  CHECK(rgb[3 * 37 + 1] == 37);
  CHECK(rgb[3 * 37 + 2] == 37);
}

TEST_CASE("image folder: convert writes CIFAR-10 binary files with the same pixels") {
  TempDir tmp;
  const std::string from = tmp / "images";
  // Train: 3 classes, 7 images; test: 3 images; PNG so the pixels are exact.
  for (int i = 0; i < 7; ++i) {
    const std::string cls =
        std::vector<std::string>{"cat", "dog", "frog"}[static_cast<size_t>(i % 3)];
    test::write_image(from + "/train/" + cls + "/" + std::to_string(i) + ".png", 32, 32,
                      image_bytes(32, 32, 50 + static_cast<uint64_t>(i)));
  }
  for (int i = 0; i < 3; ++i) {
    const std::string cls = std::vector<std::string>{"cat", "dog", "frog"}[static_cast<size_t>(i)];
    test::write_image(from + "/test/" + cls + "/t.png", 32, 32,
                      image_bytes(32, 32, 90 + static_cast<uint64_t>(i)));
  }
  const ConvertSummary summary = convert_image_folder_to_cifar10(from, tmp / "bin");
  CHECK(summary.train_images == 7);
  CHECK(summary.test_images == 3);
  CHECK(summary.class_names == std::vector<std::string>{"cat", "dog", "frog"});

  const auto folder = ImageFolder::open(from + "/train");
  const auto binary = Cifar10Binary::open(tmp / "bin", "train");
  REQUIRE(binary->size() == folder->size());
  CHECK(binary->class_names() == folder->class_names());
  // In the seeded shuffled order, not class by class (a limit to the first
  // N would take one class).
  const std::vector<int64_t> order = random_permutation(folder->size(), kConvertShuffleSeed);
  std::vector<int64_t> identity(order.size());
  for (size_t i = 0; i < identity.size(); ++i) identity[i] = static_cast<int64_t>(i);
  CHECK(order != identity);
  std::vector<uint8_t> a(3072), b(3072);
  for (int64_t i = 0; i < binary->size(); ++i) {
    CHECK(binary->get(i, a.data()) == folder->get(order[static_cast<size_t>(i)], b.data()));
    CHECK(a == b);
  }
  const auto binary_test = Cifar10Binary::open(tmp / "bin", "test");
  CHECK(count_per_class(*binary_test) == std::vector<int64_t>{1, 1, 1});
}

TEST_CASE("image folder: required_shape accepts matching images") {
  TempDir tmp;
  test::write_image(tmp / "r/a/1.png", 32, 32, image_bytes(32, 32, 1));
  ImageFolderOptions options;
  options.required_shape = ImageShape{32, 32, 3};
  CHECK(ImageFolder::open(tmp / "r", options)->size() == 1);
  CHECK(is_supported_image_file("x/y.JPEG"));
  CHECK(is_supported_image_file("a.png"));
  CHECK_FALSE(is_supported_image_file("a.gif"));
  CHECK_FALSE(is_supported_image_file("a"));
}
