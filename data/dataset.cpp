// The small helpers every dataset shares: index checks and per-class counts.
#include "data/dataset.h"

#include <stdexcept>
#include <string>

namespace b3 {

void check_index(const char* what, int64_t index, int64_t size) {
  if (index < 0 || index >= size) {
    throw std::out_of_range(std::string(what) + ": index " + std::to_string(index) +
                            " is out of range for a dataset of " + std::to_string(size) +
                            " examples");
  }
}

std::vector<int64_t> count_per_class(const Dataset& dataset) {
  std::vector<int64_t> counts(static_cast<size_t>(dataset.num_classes()), 0);
  for (int64_t i = 0; i < dataset.size(); ++i) {
    const int64_t label = dataset.label(i);
    if (label < 0 || label >= static_cast<int64_t>(counts.size())) {
      throw std::runtime_error("count_per_class: example " + std::to_string(i) + " has label " +
                               std::to_string(label) + " but the dataset has " +
                               std::to_string(counts.size()) + " classes");
    }
    ++counts[static_cast<size_t>(label)];
  }
  return counts;
}

std::string ImageShape::str() const {
  return std::to_string(height) + "x" + std::to_string(width) + "x" + std::to_string(channels);
}

}  // namespace b3
