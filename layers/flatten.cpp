// Flatten module: checks its dims against the input (errors name the module
// and the shape), then forwards to Tensor::flatten.
#include "layers/flatten.h"

#include <stdexcept>

namespace b3 {

Tensor Flatten::forward(const Tensor& x) {
  if (!x.defined()) throw std::invalid_argument("Flatten: the input is undefined");
  if (x.dim() == 0) return x.flatten(start_dim_, end_dim_);  // a scalar becomes [1]
  const int64_t rank = x.dim();
  const int64_t start = start_dim_ < 0 ? start_dim_ + rank : start_dim_;
  const int64_t end = end_dim_ < 0 ? end_dim_ + rank : end_dim_;
  if (start < 0 || start >= rank || end < 0 || end >= rank || start > end) {
    throw std::invalid_argument("Flatten: dims " + std::to_string(start_dim_) + ".." +
                                std::to_string(end_dim_) + " do not fit the input " +
                                shape_str(x.shape()) + " (" + std::to_string(rank) +
                                " dims; start_dim must not come after end_dim)");
  }
  return x.flatten(start, end);
}

std::string Flatten::describe() const {
  return "Flatten(start_dim=" + std::to_string(start_dim_) +
         ", end_dim=" + std::to_string(end_dim_) + ")";
}

}  // namespace b3
