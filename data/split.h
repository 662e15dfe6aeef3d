// Subsets and seeded random splits of a dataset, as torch.utils.data.Subset
// and random_split: a Subset is a list of indices into a base dataset, and
// random_split deals a seeded random permutation out in consecutive pieces.
// The permutation comes from b3's Generator, so a seed gives the same split on
// every machine (not the same split as PyTorch's generator would).
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "data/dataset.h"

namespace b3 {

class Subset : public Dataset {
 public:
  // Every index must lie in [0, base->size()). A Subset of a Subset points
  // straight at the innermost dataset (one indirection, however deep).
  Subset(std::shared_ptr<const Dataset> base, std::vector<int64_t> indices);

  int64_t size() const override { return static_cast<int64_t>(indices_.size()); }
  ImageShape image_shape() const override { return base_->image_shape(); }
  std::vector<std::string> class_names() const override { return base_->class_names(); }
  int64_t get(int64_t index, uint8_t* pixels) const override;
  int64_t label(int64_t index) const override;

  const std::shared_ptr<const Dataset>& base() const { return base_; }
  const std::vector<int64_t>& indices() const { return indices_; }

 private:
  std::shared_ptr<const Dataset> base_;
  std::vector<int64_t> indices_;
};

// A permutation of 0..n-1 from Generator(seed) (Fisher-Yates, from the end).
std::vector<int64_t> random_permutation(int64_t n, uint64_t seed);

// Splits `dataset` into pieces of the given sizes (which must add up to its
// size) along random_permutation(size, seed).
std::vector<std::shared_ptr<Subset>> random_split(const std::shared_ptr<const Dataset>& dataset,
                                                  const std::vector<int64_t>& sizes, uint64_t seed);

// The reference's train/validation split: validation_size examples (5,000 by
// default, leaving 45,000 of CIFAR-10's 50,000) for validation, the rest for
// training. Returns {train, validation}.
std::pair<std::shared_ptr<Subset>, std::shared_ptr<Subset>> split_train_validation(
    const std::shared_ptr<const Dataset>& dataset, int64_t validation_size = 5000,
    uint64_t seed = 0);

// The first `count` examples of `dataset` (all of them when count is 0 or
// larger than its size).
std::shared_ptr<const Dataset> take_first(const std::shared_ptr<const Dataset>& dataset,
                                          int64_t count);

}  // namespace b3
