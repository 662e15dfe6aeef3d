// CIFAR-10 in its official binary format ("cifar-10-batches-bin"):
// data_batch_1.bin ... data_batch_5.bin (train, 10,000 images each) and
// test_batch.bin (test). Each record is one label byte (0-9) followed by
// 3,072 pixel bytes: the red plane, then green, then blue, each 32x32 row-major.
// batches.meta.txt, when present, names the classes one per line.
//
// Cifar10Binary reads a split eagerly (150 MB for the training set) and keeps
// it as HWC bytes, so get() is one memcpy. The writer makes the same files
// from any 32x32x3 dataset (used by `b3 data convert`).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace b3 {

inline constexpr int64_t kCifar10ImageSide = 32;
inline constexpr int64_t kCifar10ImageBytes = 3 * 32 * 32;              // 3,072
inline constexpr int64_t kCifar10RecordBytes = 1 + kCifar10ImageBytes;  // 3,073
inline constexpr int64_t kCifar10MaxClasses = 10;                       // labels 0-9

// airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck.
const std::vector<std::string>& cifar10_class_names();

// The file names of a split: "train" -> data_batch_1..5.bin, "test" -> test_batch.bin.
// Any other split is an std::invalid_argument.
std::vector<std::string> cifar10_batch_file_names(const std::string& split);

// The folder holding the batch files: `dir` itself when it has
// data_batch_1.bin or test_batch.bin, else `dir`/cifar-10-batches-bin when
// that has them; empty when neither does.
std::string find_cifar10_batches_dir(const std::string& dir);

class Cifar10Binary : public Dataset {
 public:
  // Reads split "train" or "test" from `dir` (the cifar-10-batches-bin folder
  // or its parent). Errors name the directory or file: missing directory or
  // batch file, a size that is not a multiple of 3,073 bytes, an empty file, a
  // label above 9 (or beyond the classes of batches.meta.txt).
  static std::shared_ptr<Cifar10Binary> open(const std::string& dir, const std::string& split);
  // Reads the given batch files in order, with the given class names.
  static std::shared_ptr<Cifar10Binary> from_files(const std::vector<std::string>& paths,
                                                   std::vector<std::string> class_names);

  int64_t size() const override { return static_cast<int64_t>(labels_.size()); }
  ImageShape image_shape() const override { return {32, 32, 3}; }
  std::vector<std::string> class_names() const override { return class_names_; }
  int64_t get(int64_t index, uint8_t* pixels) const override;
  int64_t label(int64_t index) const override;
  // The files read, in order.
  const std::vector<std::string>& files() const { return files_; }

 private:
  std::vector<std::string> files_;
  std::vector<std::string> class_names_;
  std::vector<uint8_t> labels_;
  std::vector<uint8_t> pixels_;  // size() images of 32x32x3, HWC
};

// Writes every example of `dataset` (32x32x3 images, labels 0-9) as CIFAR-10
// records, spread in order over `paths` as evenly as possible (the first files
// take one more when the count does not divide). All files appear together,
// each complete, or none does.
void write_cifar10_batches(const Dataset& dataset, const std::vector<std::string>& paths);

// Writes `dir`/data_batch_1..5.bin from `train` (at least 5 examples),
// `dir`/test_batch.bin from `test`, and batches.meta.txt with the class names
// (train's; test must have the same). Creates `dir` if needed. The files
// appear only once every record is written, so an error leaves none behind.
void write_cifar10_binary(const Dataset& train, const Dataset& test, const std::string& dir);

}  // namespace b3
