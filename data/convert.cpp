// Image folder -> CIFAR-10 binary files.
#include "data/convert.h"

#include <filesystem>
#include <stdexcept>

#include "data/cifar10_binary.h"
#include "data/image_folder.h"
#include "data/split.h"

namespace fs = std::filesystem;

namespace b3 {

ConvertSummary convert_image_folder_to_cifar10(const std::string& from, const std::string& to) {
  std::error_code error;
  if (!fs::is_directory(from, error)) {
    throw std::runtime_error("data convert: --from '" + from + "' is not a directory");
  }
  const fs::path train_dir = fs::path(from) / "train";
  const fs::path test_dir = fs::path(from) / "test";
  if (!fs::is_directory(train_dir, error) || !fs::is_directory(test_dir, error)) {
    throw std::runtime_error("data convert: --from '" + from +
                             "' needs train/ and test/ subfolders, each with one folder per class");
  }
  ImageFolderOptions options;
  options.required_shape = ImageShape{kCifar10ImageSide, kCifar10ImageSide, 3};
  const auto train = ImageFolder::open(train_dir.string(), options);
  const auto test = ImageFolder::open(test_dir.string(), options);
  if (train->num_classes() > kCifar10MaxClasses) {
    throw std::runtime_error("data convert: '" + train_dir.string() + "' has " +
                             std::to_string(train->num_classes()) +
                             " class folders; the CIFAR-10 format holds at most 10 classes");
  }
  if (train->class_names() != test->class_names()) {
    throw std::runtime_error("data convert: '" + train_dir.string() + "' and '" +
                             test_dir.string() + "' have different class folders");
  }
  const Subset shuffled_train(train, random_permutation(train->size(), kConvertShuffleSeed));
  const Subset shuffled_test(test, random_permutation(test->size(), kConvertShuffleSeed));
  write_cifar10_binary(shuffled_train, shuffled_test, to);
  return {train->size(), test->size(), train->class_names(), to};
}

}  // namespace b3
