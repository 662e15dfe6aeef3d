// `b3 data convert`: an image folder (train/ and test/, one subfolder per
// class, 32x32 images) rewritten as CIFAR-10 binary files, so that the fast
// binary reader can load it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace b3 {

struct ConvertSummary {
  int64_t train_images = 0;
  int64_t test_images = 0;
  std::vector<std::string> class_names;
  std::string output_dir;
};

// Reads `from`/train and `from`/test (every image must be 32x32; any other
// size is an error naming the file), at most 10 classes, the same classes in
// both; writes `to`/data_batch_1..5.bin, test_batch.bin and batches.meta.txt
// in a seeded random order (random_permutation(size, kConvertShuffleSeed) of
// the folder's class-by-class order), as the official files mix the classes:
// otherwise "the first 1,000 test images" (--test-limit) would be one class.
// Nothing is written unless every image was read.
constexpr uint64_t kConvertShuffleSeed = 0;
ConvertSummary convert_image_folder_to_cifar10(const std::string& from, const std::string& to);

}  // namespace b3
