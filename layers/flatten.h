// Flatten, as torch.flatten / nn.Flatten: merges dims start_dim..end_dim into
// one, e.g. MobileNetV3's pooled features [N, 960, 1, 1] -> [N, 960].
// A view when the layout allows, else a copy in logical (NCHW) order: a
// channels_last input is copied to contiguous first, as PyTorch's reshape
// does, so the flattened order is always the logical one (C, H, W). Autograd
// is recorded by Tensor::reshape (the gradient is reshaped back).
#pragma once

#include <cstdint>
#include <string>

#include "layers/module.h"

namespace b3 {

// torch.flatten(x, start_dim, end_dim); the defaults flatten everything.
inline Tensor flatten(const Tensor& x, int64_t start_dim = 0, int64_t end_dim = -1) {
  return x.flatten(start_dim, end_dim);
}

// nn.Flatten: by default keeps the batch dim and merges the rest.
class Flatten : public Module {
 public:
  explicit Flatten(int64_t start_dim = 1, int64_t end_dim = -1)
      : start_dim_(start_dim), end_dim_(end_dim) {}
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;

  int64_t start_dim() const { return start_dim_; }
  int64_t end_dim() const { return end_dim_; }

 private:
  int64_t start_dim_;
  int64_t end_dim_;
};

}  // namespace b3
