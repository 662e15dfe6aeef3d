// Squeeze-and-excitation as torchvision.ops.SqueezeExcitation with MobileNetV3's
// choices (activation ReLU, scale_activation Hardsigmoid):
//   s   = hardsigmoid(fc2(relu(fc1(avgpool(x)))))   fc1, fc2: 1x1 convolutions with bias
//   out = x * s                                      s broadcast over H, W
// Children are named as torchvision's (avgpool, fc1, activation, fc2,
// scale_activation), so the parameters are fc1.weight, fc1.bias, fc2.weight,
// fc2.bias. MobileNetV3 uses squeeze_channels = make_divisible(expanded / 4, 8).
#pragma once

#include <memory>
#include <optional>

#include "layers/activations.h"
#include "layers/conv2d.h"
#include "layers/module.h"
#include "layers/pooling.h"

namespace b3 {

// torchvision's _make_divisible: the multiple of `divisor` nearest to `value`
// (at least min_value, default divisor), bumped up one step if that would
// lose more than 10%.
int64_t make_divisible(double value, int64_t divisor,
                       std::optional<int64_t> min_value = std::nullopt);

// out[n, c, h, w] = x[n, c, h, w] * scale[n, c, 0, 0]; x in either format,
// scale [N, C, 1, 1]; the output keeps x's format.
Tensor channel_scale(const Tensor& x, const Tensor& scale);

class SqueezeExcitation : public Module {
 public:
  SqueezeExcitation(int64_t input_channels, int64_t squeeze_channels, Generator& gen);
  Tensor forward(const Tensor& input) override;
  std::string describe() const override;

  std::shared_ptr<AdaptiveAvgPool2d> avgpool;
  std::shared_ptr<Conv2d> fc1;
  std::shared_ptr<ReLU> activation;
  std::shared_ptr<Conv2d> fc2;
  std::shared_ptr<Hardsigmoid> scale_activation;
};

}  // namespace b3
