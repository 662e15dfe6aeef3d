// MobileNetV3: torchvision's configuration tables, block wiring and
// initialization (see mobilenet_v3.h for the structure).
#include "models/mobilenet_v3.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

#include "autograd/grad_mode.h"
#include "layers/activations.h"
#include "layers/batchnorm2d.h"
#include "layers/conv2d.h"
#include "layers/dropout.h"
#include "layers/linear.h"
#include "layers/pooling.h"
#include "layers/squeeze_excite.h"
#include "tensor/ops.h"

namespace b3 {

namespace {

// One table row before scaling: (in, kernel, expanded, out, SE, HS, stride).
using Row = InvertedResidualConfig;

const std::vector<Row>& large_table() {
  static const std::vector<Row> table{
      {16, 3, 16, 16, false, false, 1},  {16, 3, 64, 24, false, false, 2},
      {24, 3, 72, 24, false, false, 1},  {24, 5, 72, 40, true, false, 2},
      {40, 5, 120, 40, true, false, 1},  {40, 5, 120, 40, true, false, 1},
      {40, 3, 240, 80, false, true, 2},  {80, 3, 200, 80, false, true, 1},
      {80, 3, 184, 80, false, true, 1},  {80, 3, 184, 80, false, true, 1},
      {80, 3, 480, 112, true, true, 1},  {112, 3, 672, 112, true, true, 1},
      {112, 5, 672, 160, true, true, 2}, {160, 5, 960, 160, true, true, 1},
      {160, 5, 960, 160, true, true, 1},
  };
  return table;
}

const std::vector<Row>& small_table() {
  static const std::vector<Row> table{
      {16, 3, 16, 16, true, false, 2},  {16, 3, 72, 24, false, false, 2},
      {24, 3, 88, 24, false, false, 1}, {24, 5, 96, 40, true, true, 2},
      {40, 5, 240, 40, true, true, 1},  {40, 5, 240, 40, true, true, 1},
      {40, 5, 120, 48, true, true, 1},  {48, 5, 144, 48, true, true, 1},
      {48, 5, 288, 96, true, true, 2},  {96, 5, 576, 96, true, true, 1},
      {96, 5, 576, 96, true, true, 1},
  };
  return table;
}

// torchvision's InvertedResidualConfig.adjust_channels.
int64_t adjust_channels(int64_t channels, const MobileNetV3Options& options) {
  return make_divisible(static_cast<double>(channels) * options.width_mult,
                        options.channel_divisor);
}

// The classifier's hidden width: 1280 (Large) or 1024 (Small), adjusted.
int64_t last_channel(const MobileNetV3Options& options) {
  return adjust_channels(options.arch == MobileNetV3Arch::large ? 1280 : 1024, options);
}

void check_options(const MobileNetV3Options& o) {
  if (o.num_classes <= 0) {
    throw std::invalid_argument("MobileNetV3: num_classes must be positive, got " +
                                std::to_string(o.num_classes));
  }
  if (!(o.width_mult > 0.0)) {
    throw std::invalid_argument("MobileNetV3: width_mult must be positive, got " +
                                std::to_string(o.width_mult));
  }
  if (o.channel_divisor <= 0) {
    throw std::invalid_argument("MobileNetV3: channel_divisor must be positive, got " +
                                std::to_string(o.channel_divisor));
  }
  if (!(o.dropout >= 0.0 && o.dropout <= 1.0)) {
    throw std::invalid_argument("MobileNetV3: dropout must be in [0, 1], got " +
                                std::to_string(o.dropout));
  }
}

}  // namespace

std::vector<InvertedResidualConfig> mobilenet_v3_config(const MobileNetV3Options& options) {
  std::vector<InvertedResidualConfig> rows =
      options.arch == MobileNetV3Arch::large ? large_table() : small_table();
  for (InvertedResidualConfig& row : rows) {
    row.input_channels = adjust_channels(row.input_channels, options);
    row.expanded_channels = adjust_channels(row.expanded_channels, options);
    row.out_channels = adjust_channels(row.out_channels, options);
  }
  return rows;
}

MobileNetV3Arch parse_mobilenet_v3_arch(const std::string& name) {
  if (name == "mobilenet_v3_large" || name == "large") return MobileNetV3Arch::large;
  if (name == "mobilenet_v3_small" || name == "small") return MobileNetV3Arch::small;
  throw std::invalid_argument("unknown model '" + name +
                              "' (expected mobilenet_v3_large or mobilenet_v3_small)");
}

// ---------------------------------------------------------------- blocks --

ConvNormActivation::ConvNormActivation(int64_t in_channels, int64_t out_channels, int64_t kernel,
                                       int64_t stride, int64_t groups, Activation activation,
                                       double bn_eps, double bn_momentum, Generator& gen)
    : activation_(activation) {
  if (activation == Activation::hardsigmoid) {
    throw std::invalid_argument(
        "ConvNormActivation: the activation must be none, relu or hardswish (the ones "
        "batch_norm_activation fuses), got hardsigmoid");
  }
  Conv2dOptions options;
  options.in_channels = in_channels;
  options.out_channels = out_channels;
  options.kernel_size = kernel;
  options.stride = stride;
  options.padding = (kernel - 1) / 2;
  options.groups = groups;
  options.bias = false;  // the BatchNorm after it has the bias
  conv = register_module("0", std::make_shared<Conv2d>(options, gen));
  norm = register_module("1", std::make_shared<BatchNorm2d>(out_channels, bn_eps, bn_momentum));
  if (activation != Activation::none) {
    activation_layer = register_module("2", activation_module(activation));
  }
  std::ostringstream d;
  d << "Conv" << kernel << "x" << kernel << (groups > 1 ? " dw" : "") << " s" << stride << " "
    << in_channels << "->" << out_channels
    << (activation == Activation::relu        ? ", BN+ReLU fused"
        : activation == Activation::hardswish ? ", BN+HS fused"
                                              : ", BN");
  description_ = d.str();
}

bool ConvNormActivation::uses_batch_statistics() const {
  // The statistics BatchNorm2d::forward would use: the batch's in training
  // mode (and always without running statistics), else the running ones.
  return norm->is_training() || !norm->running_mean.defined();
}

bool ConvNormActivation::infers_in_epilogue(const Tensor& input) const {
  return !uses_batch_statistics() && !GradMode::is_enabled() && input.device().is_cpu();
}

// Inference on the CPU: the convolution normalizes and activates each output
// as it stores it (BatchNorm's evaluation constants as its epilogue), and adds
// the residual when there is one, so the output is written once and never
// read back by a second pass, and no second tensor of its size exists. The
// same values as the ops in sequence, bit for bit
// (tests/test_conv2d_epilogue.cpp, tests/test_mobilenet_v3.cpp).
Tensor ConvNormActivation::infer(const Tensor& input, const Tensor& residual) {
  const BatchNorm2d& bn = *norm;
  const BatchNormInferenceConstants folded = batch_norm_inference_constants(
      bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.options().eps);
  const Conv2dOptions& c = conv->options();
  return conv2d(input, conv->weight, conv->bias, c.stride, c.padding, c.groups,
                Conv2dEpilogue{folded.scale, folded.shift, activation_, residual});
}

Tensor ConvNormActivation::forward(const Tensor& input) {
  if (infers_in_epilogue(input)) return infer(input, Tensor());
  const BatchNorm2d& bn = *norm;
  const Tensor x = conv->forward(input);
  return batch_norm_activation(x, bn.weight, bn.bias, bn.running_mean, bn.running_var,
                               bn.is_training() ? bn.num_batches_tracked : Tensor(),
                               uses_batch_statistics(), bn.options().momentum, bn.options().eps,
                               activation_);
}

Tensor ConvNormActivation::forward_adding(const Tensor& input, const Tensor& residual) {
  if (infers_in_epilogue(input) && residual.device().is_cpu()) return infer(input, residual);
  return add(forward(input), residual);
}

Tensor ConvNormActivation::forward_unfused(const Tensor& input) {
  const Tensor y = norm->forward(conv->forward(input));
  return activation_layer ? activation_layer->forward(y) : y;
}

InvertedResidual::InvertedResidual(const InvertedResidualConfig& cfg,
                                   const MobileNetV3Options& options, Generator& gen)
    : use_residual(cfg.stride == 1 && cfg.input_channels == cfg.out_channels), config(cfg) {
  const Activation act = cfg.use_hardswish ? Activation::hardswish : Activation::relu;
  block = register_module("block", std::make_shared<Sequential>());
  if (cfg.expanded_channels != cfg.input_channels) {
    block->push_back(std::make_shared<ConvNormActivation>(cfg.input_channels, cfg.expanded_channels,
                                                          1, 1, 1, act, options.bn_eps,
                                                          options.bn_momentum, gen));
  }
  block->push_back(std::make_shared<ConvNormActivation>(
      cfg.expanded_channels, cfg.expanded_channels, cfg.kernel, cfg.stride, cfg.expanded_channels,
      act, options.bn_eps, options.bn_momentum, gen));
  if (cfg.use_se) {
    const int64_t squeeze =
        make_divisible(static_cast<double>(cfg.expanded_channels / 4), options.channel_divisor);
    block->push_back(std::make_shared<SqueezeExcitation>(cfg.expanded_channels, squeeze, gen));
  }
  projection = std::make_shared<ConvNormActivation>(cfg.expanded_channels, cfg.out_channels, 1, 1,
                                                    1, Activation::none, options.bn_eps,
                                                    options.bn_momentum, gen);
  block->push_back(projection);
}

Tensor InvertedResidual::forward(const Tensor& input) {
  if (!use_residual) return block->forward(input);
  // Every child but the projection, then the projection adding the input
  // (in its store when it infers on the CPU, else as an add after it).
  Tensor x = input;
  for (size_t i = 0; i + 1 < block->size(); ++i) x = block->at(i)->forward(x);
  return projection->forward_adding(x, input);
}

std::string InvertedResidual::describe() const {
  std::ostringstream d;
  d << "InvertedResidual k" << config.kernel << " s" << config.stride << " "
    << config.input_channels << "->" << config.expanded_channels << "->" << config.out_channels
    << (config.use_se ? " SE" : "") << (config.use_hardswish ? " HS" : " RE")
    << (use_residual ? " +res" : "");
  return d.str();
}

// ----------------------------------------------------------------- model --

MobileNetV3::MobileNetV3(const MobileNetV3Options& options) : options_(options) {
  check_options(options);
  Generator gen(options.seed);
  const std::vector<InvertedResidualConfig> rows = mobilenet_v3_config(options);

  features = register_module("features", std::make_shared<Sequential>());
  features->push_back(std::make_shared<ConvNormActivation>(3, rows.front().input_channels, 3, 2, 1,
                                                           Activation::hardswish, options.bn_eps,
                                                           options.bn_momentum, gen));
  for (const InvertedResidualConfig& row : rows)
    features->push_back(std::make_shared<InvertedResidual>(row, options, gen));
  const int64_t lastconv_in = rows.back().out_channels;
  const int64_t lastconv_out = 6 * lastconv_in;
  features->push_back(std::make_shared<ConvNormActivation>(lastconv_in, lastconv_out, 1, 1, 1,
                                                           Activation::hardswish, options.bn_eps,
                                                           options.bn_momentum, gen));
  avgpool = register_module("avgpool", std::make_shared<AdaptiveAvgPool2d>(1));
  classifier = register_module("classifier", std::make_shared<Sequential>());
  const int64_t hidden = last_channel(options);
  classifier->push_back(std::make_shared<Linear>(lastconv_out, hidden, gen));
  classifier->push_back(std::make_shared<Hardswish>());
  classifier->push_back(std::make_shared<Dropout>(options.dropout, options.seed ^ 0xD0D0D0D0ull));
  classifier->push_back(std::make_shared<Linear>(hidden, options.num_classes, gen));
  reset_parameters(gen);
}

// Visits every module in the tree, depth first, in registration order.
template <typename Fn>
static void visit_modules(Module& module, Fn&& fn) {
  fn(module);
  for (auto& [name, child] : module.named_children()) visit_modules(*child, fn);
}

void MobileNetV3::reset_parameters(Generator& gen) {
  visit_modules(*this, [&](Module& m) {
    if (auto* conv = dynamic_cast<Conv2d*>(&m)) {
      kaiming_normal_fan_out_(conv->weight, gen);
      if (conv->bias.defined()) conv->bias.zero_();
    } else if (auto* bn = dynamic_cast<BatchNorm2d*>(&m)) {
      if (bn->weight.defined()) bn->weight.fill_(1.0);
      if (bn->bias.defined()) bn->bias.zero_();
      if (bn->running_mean.defined()) bn->running_mean.zero_();
      if (bn->running_var.defined()) bn->running_var.fill_(1.0);
      if (bn->num_batches_tracked.defined()) bn->num_batches_tracked.zero_();
    } else if (auto* fc = dynamic_cast<Linear*>(&m)) {
      normal_(fc->weight, 0.0, 0.01, gen);
      if (fc->bias.defined()) fc->bias.zero_();
    }
  });
}

Tensor MobileNetV3::forward(const Tensor& input) {
  if (input.dim() != 4 || input.size(1) != 3) {
    throw std::invalid_argument("MobileNetV3: expected input [N, 3, H, W], got " +
                                shape_str(input.shape()));
  }
  Tensor x = features->forward(input);
  x = avgpool->forward(x);
  x = x.flatten(1);
  return classifier->forward(x);
}

std::string MobileNetV3::describe() const {
  return std::string("MobileNetV3-") +
         (options_.arch == MobileNetV3Arch::large ? "Large" : "Small") + "(" +
         std::to_string(options_.num_classes) + " classes)";
}

std::shared_ptr<MobileNetV3> mobilenet_v3_large(int64_t num_classes, uint64_t seed) {
  MobileNetV3Options options;
  options.num_classes = num_classes;
  options.seed = seed;
  return std::make_shared<MobileNetV3>(options);
}

std::shared_ptr<MobileNetV3> mobilenet_v3_small(int64_t num_classes, uint64_t seed) {
  MobileNetV3Options options;
  options.arch = MobileNetV3Arch::small;
  options.num_classes = num_classes;
  options.seed = seed;
  return std::make_shared<MobileNetV3>(options);
}

}  // namespace b3
