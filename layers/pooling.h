// Global average pooling, as torch.nn.AdaptiveAvgPool2d(1):
//   out[n, c, 0, 0] = mean over (h, w) of in[n, c, h, w]
// input [N, C, H, W] in either memory format -> output [N, C, 1, 1].
// Backward spreads g[n, c] / (H*W) over every (h, w).
// Only output size 1 is supported: it is the only one MobileNetV3 uses.
#pragma once

#include "layers/module.h"

namespace b3 {

Tensor adaptive_avg_pool2d(const Tensor& input, int64_t output_size = 1);

class AdaptiveAvgPool2d : public Module {
 public:
  explicit AdaptiveAvgPool2d(int64_t output_size = 1);
  Tensor forward(const Tensor& input) override { return adaptive_avg_pool2d(input, output_size_); }
  std::string describe() const override { return "AdaptiveAvgPool2d(1)"; }

 private:
  int64_t output_size_;
};

}  // namespace b3
