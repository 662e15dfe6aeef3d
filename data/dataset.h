// Datasets: numbered examples, each one uint8 image (height x width x
// channels, HWC, row-major) and an integer class label. Every dataset in b3
// (CIFAR-10 binary files, image folders, synthetic data, a split of another
// dataset) answers the same four questions, and get() is safe to call from
// several loader threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace b3 {

struct ImageShape {
  int64_t height = 0;
  int64_t width = 0;
  int64_t channels = 0;
  int64_t bytes() const { return height * width * channels; }
  std::string str() const;  // "32x32x3" (height x width x channels)
  bool operator==(const ImageShape&) const = default;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual ImageShape image_shape() const = 0;
  virtual std::vector<std::string> class_names() const = 0;
  int64_t num_classes() const { return static_cast<int64_t>(class_names().size()); }
  // Writes example `index` (0 <= index < size()) as image_shape().bytes() bytes
  // of HWC uint8 into `pixels` and returns its label. Thread-safe.
  virtual int64_t get(int64_t index, uint8_t* pixels) const = 0;
  // The label of example `index` alone. Datasets that keep labels apart from
  // pixels answer without touching the image; this fallback decodes it.
  virtual int64_t label(int64_t index) const {
    std::vector<uint8_t> scratch(static_cast<size_t>(image_shape().bytes()));
    return get(index, scratch.data());
  }
};

// Throws std::out_of_range naming `what` unless 0 <= index < size.
void check_index(const char* what, int64_t index, int64_t size);

// How many examples each class has (labels read with Dataset::label).
std::vector<int64_t> count_per_class(const Dataset& dataset);

}  // namespace b3
