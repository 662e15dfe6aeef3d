// Subset, random permutations and random_split.
#include "data/split.h"

#include <numeric>
#include <stdexcept>
#include <string>

#include "tensor/random.h"

namespace b3 {

Subset::Subset(std::shared_ptr<const Dataset> base, std::vector<int64_t> indices)
    : base_(std::move(base)), indices_(std::move(indices)) {
  if (base_ == nullptr) throw std::invalid_argument("Subset: the base dataset is null");
  const int64_t n = base_->size();
  for (size_t i = 0; i < indices_.size(); ++i) {
    if (indices_[i] < 0 || indices_[i] >= n) {
      throw std::invalid_argument("Subset: index " + std::to_string(indices_[i]) + " (position " +
                                  std::to_string(i) + ") is out of range for a dataset of " +
                                  std::to_string(n));
    }
  }
  // Flatten nested subsets so get() is one lookup.
  if (const auto* inner = dynamic_cast<const Subset*>(base_.get())) {
    for (int64_t& index : indices_) index = inner->indices_[static_cast<size_t>(index)];
    base_ = inner->base_;
  }
}

int64_t Subset::get(int64_t index, uint8_t* pixels) const {
  check_index("Subset::get", index, size());
  return base_->get(indices_[static_cast<size_t>(index)], pixels);
}

int64_t Subset::label(int64_t index) const {
  check_index("Subset::label", index, size());
  return base_->label(indices_[static_cast<size_t>(index)]);
}

std::vector<int64_t> random_permutation(int64_t n, uint64_t seed) {
  if (n < 0) throw std::invalid_argument("random_permutation: n must be >= 0");
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  Generator gen(seed);
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(gen.below(static_cast<uint64_t>(i) + 1));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

std::vector<std::shared_ptr<Subset>> random_split(const std::shared_ptr<const Dataset>& dataset,
                                                  const std::vector<int64_t>& sizes,
                                                  uint64_t seed) {
  if (dataset == nullptr) throw std::invalid_argument("random_split: the dataset is null");
  int64_t total = 0;
  for (int64_t s : sizes) {
    if (s < 0) {
      throw std::invalid_argument("random_split: sizes must be >= 0, got " + std::to_string(s));
    }
    total += s;
  }
  if (total != dataset->size()) {
    throw std::invalid_argument("random_split: the sizes add up to " + std::to_string(total) +
                                " but the dataset has " + std::to_string(dataset->size()) +
                                " examples");
  }
  const std::vector<int64_t> order = random_permutation(dataset->size(), seed);
  std::vector<std::shared_ptr<Subset>> pieces;
  auto begin = order.begin();
  for (int64_t s : sizes) {
    pieces.push_back(std::make_shared<Subset>(dataset, std::vector<int64_t>(begin, begin + s)));
    begin += s;
  }
  return pieces;
}

std::pair<std::shared_ptr<Subset>, std::shared_ptr<Subset>> split_train_validation(
    const std::shared_ptr<const Dataset>& dataset, int64_t validation_size, uint64_t seed) {
  if (dataset == nullptr) throw std::invalid_argument("split_train_validation: null dataset");
  if (validation_size < 0 || validation_size >= dataset->size()) {
    throw std::invalid_argument(
        "split_train_validation: validation size " + std::to_string(validation_size) +
        " must be >= 0 and leave training examples out of " + std::to_string(dataset->size()));
  }
  auto pieces = random_split(dataset, {dataset->size() - validation_size, validation_size}, seed);
  return {pieces[0], pieces[1]};
}

std::shared_ptr<const Dataset> take_first(const std::shared_ptr<const Dataset>& dataset,
                                          int64_t count) {
  if (dataset == nullptr) throw std::invalid_argument("take_first: null dataset");
  if (count < 0) {
    throw std::invalid_argument("take_first: count must be >= 0, got " + std::to_string(count));
  }
  if (count == 0 || count >= dataset->size()) return dataset;
  std::vector<int64_t> indices(static_cast<size_t>(count));
  std::iota(indices.begin(), indices.end(), int64_t{0});
  return std::make_shared<Subset>(dataset, std::move(indices));
}

}  // namespace b3
