// MobileNetV3-Large and -Small exactly as torchvision builds them
// (torchvision/models/mobilenetv3.py), so that state_dict keys, parameter
// counts, initialization and forward semantics carry over unchanged.
//
//   features.0                 Conv 3x3 s2 -> 16, BN, Hardswish        (the stem)
//   features.1 .. features.k   InvertedResidual blocks from the table below
//   features.k+1               Conv 1x1 -> 6 x last block's channels, BN, Hardswish
//   avgpool                    AdaptiveAvgPool2d(1), then flatten
//   classifier                 Linear -> Hardswish -> Dropout(0.2) -> Linear(num_classes)
//
// An InvertedResidual block is named "block" inside and holds, in order:
// 1x1 expand (only when expanded != input channels), k x k depthwise with the
// stride, SqueezeExcitation where the table says, 1x1 project (no activation);
// it adds the input back when stride == 1 and input == output channels.
// BatchNorm uses eps 1e-3 and momentum 0.01 throughout.
//
// Options for the alignment experiments: width_mult scales every channel
// count, and channel_divisor is the multiple channels are rounded to
// (torchvision: 8; 1 = no rounding; 16 or 32 round further). With
// channel_divisor != 8 the squeeze-excitation widths follow the same divisor.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "layers/activations.h"
#include "layers/module.h"
#include "tensor/random.h"

namespace b3 {

class BatchNorm2d;
class Conv2d;

enum class MobileNetV3Arch { large, small };

struct MobileNetV3Options {
  MobileNetV3Arch arch = MobileNetV3Arch::large;
  int64_t num_classes = 1000;
  double width_mult = 1.0;
  int64_t channel_divisor = 8;
  double dropout = 0.2;
  double bn_eps = 1e-3;
  double bn_momentum = 0.01;
  uint64_t seed = 0;  // for the initial weights and the dropout mask stream
};

// One row of torchvision's configuration table (channels before width_mult).
struct InvertedResidualConfig {
  int64_t input_channels;
  int64_t kernel;
  int64_t expanded_channels;
  int64_t out_channels;
  bool use_se;
  bool use_hardswish;  // "HS" (else "RE": ReLU)
  int64_t stride;
};

// The table for an architecture, channels already scaled and rounded.
std::vector<InvertedResidualConfig> mobilenet_v3_config(const MobileNetV3Options& options);

// Conv2d (no bias) -> BatchNorm2d -> activation (none, ReLU or Hardswish),
// as torchvision's Conv2dNormActivation. Its children "0" (the Conv2d), "1"
// (the BatchNorm2d) and "2" (the activation's module, absent for none) give
// torchvision's state_dict keys. forward() runs the convolution, then the
// BatchNorm and the activation as ONE op (batch_norm_activation,
// layers/batchnorm2d.h) with child "1"'s parameters, buffers, options and
// mode; forward_unfused() runs the three children one after another, which
// gives the same outputs, gradients and running statistics in more passes
// over memory (the reference the fused forward is tested against).
class ConvNormActivation : public Module {
 public:
  ConvNormActivation(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride,
                     int64_t groups, Activation activation, double bn_eps, double bn_momentum,
                     Generator& gen);
  Tensor forward(const Tensor& input) override;
  // forward(input) + residual (a block's skip connection): in an inference
  // forward on the CPU the convolution adds it as it stores each output.
  Tensor forward_adding(const Tensor& input, const Tensor& residual);
  Tensor forward_unfused(const Tensor& input);
  // "Conv3x3 s2 3->16, BN+HS fused": the shape, and which ops run as one.
  std::string describe() const override { return description_; }

  Activation activation() const { return activation_; }
  std::shared_ptr<Conv2d> conv;              // child "0"
  std::shared_ptr<BatchNorm2d> norm;         // child "1"
  std::shared_ptr<Module> activation_layer;  // child "2"; null for none

 private:
  bool uses_batch_statistics() const;
  // The inference path's epilogue (BatchNorm's constants and the activation),
  // when this forward takes it: CPU, evaluation statistics, no gradients.
  bool infers_in_epilogue(const Tensor& input) const;
  Tensor infer(const Tensor& input, const Tensor& residual);

  Activation activation_;
  std::string description_;
};

class InvertedResidual : public Module {
 public:
  InvertedResidual(const InvertedResidualConfig& config, const MobileNetV3Options& options,
                   Generator& gen);
  Tensor forward(const Tensor& input) override;
  std::string describe() const override;

  std::shared_ptr<Sequential> block;
  std::shared_ptr<ConvNormActivation> projection;  // block's last child
  bool use_residual;
  InvertedResidualConfig config;
};

class MobileNetV3 : public Module {
 public:
  explicit MobileNetV3(const MobileNetV3Options& options);
  Tensor forward(const Tensor& input) override;
  std::string describe() const override;
  // Re-draws every weight as torchvision does: convolutions kaiming normal
  // (fan_out) with zero bias, BatchNorm weight 1 bias 0, Linear N(0, 0.01)
  // with zero bias; running statistics reset.
  void reset_parameters(Generator& gen);

  const MobileNetV3Options& options() const { return options_; }
  std::shared_ptr<Sequential> features;
  std::shared_ptr<Module> avgpool;
  std::shared_ptr<Sequential> classifier;

 private:
  MobileNetV3Options options_;
};

std::shared_ptr<MobileNetV3> mobilenet_v3_large(int64_t num_classes = 1000, uint64_t seed = 0);
std::shared_ptr<MobileNetV3> mobilenet_v3_small(int64_t num_classes = 1000, uint64_t seed = 0);
// "mobilenet_v3_large" or "mobilenet_v3_small" (the names torchvision uses).
MobileNetV3Arch parse_mobilenet_v3_arch(const std::string& name);

}  // namespace b3
