// Synthetic images for tests and offline runs: each class has its own smooth
// colour pattern (random sinusoids per channel, drawn from the seed), and each
// example adds a random brightness shift and per-pixel noise. A small CNN learns
// it in an epoch; nothing about it resembles CIFAR-10, so accuracy on it says
// only that training works.
//
// Examples are computed on demand from (seed, index), so a 50,000-image set
// costs no memory and get() is the same on every machine and thread.
// Labels cycle through the classes: label(i) = (first_example + i) mod num_classes.
// `first_example` lets a test set share the training set's class patterns
// (same seed) with different examples: train = (50000, ..., seed, 0),
// test = (10000, ..., seed, 50000).
#pragma once

#include <cstdint>
#include <vector>

#include "data/dataset.h"

namespace b3 {

class SyntheticDataset : public Dataset {
 public:
  SyntheticDataset(int64_t size, ImageShape shape = {32, 32, 3}, int64_t num_classes = 10,
                   uint64_t seed = 0, int64_t first_example = 0);

  int64_t size() const override { return size_; }
  ImageShape image_shape() const override { return shape_; }
  std::vector<std::string> class_names() const override;  // "class_0", "class_1", ...
  int64_t get(int64_t index, uint8_t* pixels) const override;
  int64_t label(int64_t index) const override;

 private:
  int64_t size_;
  ImageShape shape_;
  int64_t num_classes_;
  uint64_t seed_;
  int64_t first_example_;
  std::vector<float> templates_;  // num_classes images, HWC, values in [0, 255]
};

}  // namespace b3
