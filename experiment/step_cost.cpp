// The analytic FLOP and memory-floor count of one MobileNetV3 training step
// (the model is described in step_cost.h): a walk over mobilenet_v3_config()
// that adds one LayerCost per op, in forward order, then the loss and the
// optimizer update.
#include "experiment/step_cost.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>

#include "layers/squeeze_excite.h"

namespace b3 {

namespace {

constexpr double kParamBytes = 4.0;  // parameters, gradients, optimizer state: f32
constexpr double kLabelBytes = 8.0;  // int64 labels

// Elementwise FLOPs per element of the op's (largest) tensor.
// BatchNorm forward: sum and sum of squares (x + s, x * x + q: 3), then
// x * scale + shift (2). Backward: the reductions sum(dy) and sum(dy * xhat)
// with xhat = (x - mean) * invstd (1 + 2 + 2), then
// dx = (dy - mean(dy) - xhat * mean(dy * xhat)) * gamma * invstd (5).
constexpr double kBatchNormForwardFlops = 5.0;
constexpr double kBatchNormBackwardFlops = 10.0;
// ReLU: a compare-select each way.
constexpr double kReluForwardFlops = 1.0;
constexpr double kReluBackwardFlops = 1.0;
// Hardswish: x * min(max(x + 3, 0), 6) / 6 (add, max, min, mul, mul);
// backward: two compares, (2x + 3) / 6 (mul, add), times dy.
constexpr double kHardswishForwardFlops = 5.0;
constexpr double kHardswishBackwardFlops = 5.0;
// Hardsigmoid: min(max(x + 3, 0), 6) / 6; backward: two compares, dy / 6.
constexpr double kHardsigmoidForwardFlops = 4.0;
constexpr double kHardsigmoidBackwardFlops = 3.0;
// Add (residual add, gradient accumulation), average pool (sum forward,
// divide-and-broadcast backward), channel scale forward, dropout (the
// multiply by the scaled mask; drawing the mask is not counted): 1.
constexpr double kAddFlops = 1.0;
constexpr double kPoolFlops = 1.0;
constexpr double kScaleForwardFlops = 1.0;
// Channel scale backward: dx = dy * s (1) and ds = sum(dy * x) (2).
constexpr double kScaleBackwardFlops = 3.0;
constexpr double kDropoutFlops = 1.0;
// Cross-entropy per logit: max, subtract, exp, sum (4; plus a log per row);
// backward: exp, subtract the one-hot, scale by 1/N (3).
constexpr double kCrossEntropyForwardFlops = 4.0;
constexpr double kCrossEntropyBackwardFlops = 3.0;
// SGD momentum per parameter: m = mu * m + g (2), p -= lr * m (2).
constexpr double kSgdFlops = 4.0;
// Adam per parameter: m = b1 m + (1 - b1) g (3), v = b2 v + (1 - b2) g^2 (4),
// denom = sqrt(v) / sqrt(bc2) + eps (3), p -= step_size * m / denom (3).
constexpr double kAdamFlops = 13.0;

double as_double(int64_t v) { return static_cast<double>(v); }

PassCost pass(double flops, double bytes) { return PassCost{flops, bytes, bytes}; }
PassCost pass(double flops, double bytes, double fused_bytes) {
  return PassCost{flops, bytes, fused_bytes};
}

enum class Act { none, relu, hardswish };

// Adds one LayerCost per op. Spatial sizes are square (h = w).
class StepWalker {
 public:
  explicit StepWalker(const StepCostOptions& options)
      : batch_(as_double(options.batch_size)),
        act_bytes_(as_double(options.activation_bytes)),
        mixed_precision_(options.activation_bytes == 2) {}

  // A convolution; returns the output height (= width).
  int64_t conv(const std::string& name, CostCategory category, int64_t in_channels, int64_t height,
               int64_t out_channels, int64_t kernel, int64_t stride, int64_t groups, bool bias,
               bool input_grad) {
    const int64_t padding = (kernel - 1) / 2;
    const int64_t out_height = (height + 2 * padding - kernel) / stride + 1;
    const double input = batch_ * as_double(in_channels * height * height);
    const double output = batch_ * as_double(out_channels * out_height * out_height);
    const double weights = as_double(out_channels * (in_channels / groups) * kernel * kernel);
    const double bias_count = bias ? as_double(out_channels) : 0.0;
    const double macs = output * as_double((in_channels / groups) * kernel * kernel);
    add_parameterized(name, category, input, output, weights + bias_count, macs,
                      bias ? output : 0.0, input_grad);
    return out_height;
  }

  void linear(const std::string& name, int64_t in_features, int64_t out_features) {
    const double input = batch_ * as_double(in_features);
    const double output = batch_ * as_double(out_features);
    const double weights = as_double(in_features * out_features) + as_double(out_features);
    add_parameterized(name, CostCategory::linear, input, output, weights, output * in_features,
                      output, true);
  }

  // BatchNorm2d in training mode over `channels` x h x h per image.
  // fused_with_activation: an activation follows and the fused floor merges them.
  void batchnorm(const std::string& name, int64_t channels, int64_t height,
                 bool fused_with_activation) {
    const double e = batch_ * as_double(channels * height * height);
    const double c = as_double(channels);
    // Forward also reads weight, bias, running mean and var, and writes the
    // running mean and var and the saved mean and invstd (8 C-vectors);
    // backward reads weight, saved mean, invstd and writes the two parameter
    // gradients (5 C-vectors).
    const double forward_vectors = 8.0 * c * kParamBytes;
    const double backward_vectors = 5.0 * c * kParamBytes;
    const double a = act_bytes_;
    LayerCost layer{name, CostCategory::batchnorm, {}, {}, {}};
    layer.forward = pass(kBatchNormForwardFlops * e, 2 * a * e + forward_vectors,
                         (fused_with_activation ? 1 : 2) * a * e + forward_vectors);
    layer.backward = pass(kBatchNormBackwardFlops * e, 3 * a * e + backward_vectors,
                          (fused_with_activation ? 2 : 3) * a * e + backward_vectors);
    layers.push_back(layer);
    parameters += 2 * channels;
  }

  // An elementwise activation over `elements` values; after_batchnorm: the
  // fused floor merges it into the BatchNorm before it.
  void activation(const std::string& name, CostCategory category, Act act, double elements,
                  bool after_batchnorm) {
    const double forward_flops = act == Act::relu ? kReluForwardFlops : kHardswishForwardFlops;
    const double backward_flops = act == Act::relu ? kReluBackwardFlops : kHardswishBackwardFlops;
    add_elementwise(name, category, elements, forward_flops, backward_flops, after_batchnorm);
  }

  void conv_norm_activation(const std::string& name, CostCategory category, int64_t in_channels,
                            int64_t& height, int64_t out_channels, int64_t kernel, int64_t stride,
                            int64_t groups, Act act, bool input_grad) {
    height = conv(name + ".0", category, in_channels, height, out_channels, kernel, stride, groups,
                  false, input_grad);
    batchnorm(name + ".1", out_channels, height, act != Act::none);
    if (act != Act::none) {
      activation(name + ".2", CostCategory::activation, act,
                 batch_ * as_double(out_channels * height * height), true);
    }
  }

  void squeeze_excite(const std::string& name, int64_t channels, int64_t squeeze, int64_t height) {
    const double e = batch_ * as_double(channels * height * height);
    const double pooled = batch_ * as_double(channels);
    const double a = act_bytes_;
    const CostCategory se = CostCategory::squeeze_excite;
    layers.push_back(LayerCost{name + ".avgpool",
                               se,
                               pass(kPoolFlops * e, a * (e + pooled)),
                               pass(kPoolFlops * e, a * (pooled + e)),
                               {}});
    conv(name + ".fc1", se, channels, 1, squeeze, 1, 1, 1, true, true);
    add_elementwise(name + ".activation", se, batch_ * as_double(squeeze), kReluForwardFlops,
                    kReluBackwardFlops, false);
    conv(name + ".fc2", se, squeeze, 1, channels, 1, 1, 1, true, true);
    add_elementwise(name + ".scale_activation", se, pooled, kHardsigmoidForwardFlops,
                    kHardsigmoidBackwardFlops, false);
    // out = x * s: reads x and s, writes out; backward reads dy, x, s and
    // writes dx and ds.
    layers.push_back(LayerCost{name + ".scale",
                               se,
                               pass(kScaleForwardFlops * e, a * (2 * e + pooled)),
                               pass(kScaleBackwardFlops * e, a * (3 * e + 2 * pooled)),
                               {}});
    // x feeds both avgpool and scale: autograd adds the two gradients.
    layers.push_back(
        LayerCost{name + ".grad_accumulate", se, {}, pass(kAddFlops * e, 3 * a * e), {}});
  }

  // The residual add over `elements` values and, in backward, the
  // accumulation of the block input's two gradients.
  void residual_add(const std::string& name, double elements) {
    const double a = act_bytes_;
    layers.push_back(LayerCost{name,
                               CostCategory::residual_add,
                               pass(kAddFlops * elements, 3 * a * elements, a * elements),
                               pass(kAddFlops * elements, 3 * a * elements, a * elements),
                               {}});
  }

  void global_pool(const std::string& name, int64_t channels, int64_t height) {
    const double e = batch_ * as_double(channels * height * height);
    const double pooled = batch_ * as_double(channels);
    const double a = act_bytes_;
    layers.push_back(LayerCost{name,
                               CostCategory::pooling,
                               pass(kPoolFlops * e, a * (e + pooled)),
                               pass(kPoolFlops * e, a * (pooled + e)),
                               {}});
  }

  // Dropout in training: writes the output and the mask (activation dtype);
  // backward reads dy and the mask, writes dx.
  void dropout(const std::string& name, int64_t features) {
    const double e = batch_ * as_double(features);
    const double a = act_bytes_;
    layers.push_back(LayerCost{name,
                               CostCategory::dropout,
                               pass(kDropoutFlops * e, 3 * a * e),
                               pass(kDropoutFlops * e, 3 * a * e),
                               {}});
  }

  // Cross-entropy (mean over the batch) on [N, classes] logits.
  void cross_entropy(int64_t classes) {
    const double logits = batch_ * as_double(classes);
    const double a = act_bytes_;
    layers.push_back(
        LayerCost{"loss",
                  CostCategory::loss,
                  pass(kCrossEntropyForwardFlops * logits + batch_,
                       a * logits + kLabelBytes * batch_ + kParamBytes),
                  pass(kCrossEntropyBackwardFlops * logits, 2 * a * logits + kLabelBytes * batch_),
                  {}});
  }

  void optimizer(StepOptimizerKind kind) {
    const double p = as_double(parameters);
    const bool adam = kind == StepOptimizerKind::adam;
    // SGD momentum reads p, g, m and writes p, m; Adam reads p, g, m, v and
    // writes p, m, v.
    const double bytes_per_parameter = (adam ? 7.0 : 5.0) * kParamBytes;
    layers.push_back(LayerCost{"optimizer",
                               CostCategory::optimizer,
                               {},
                               {},
                               pass((adam ? kAdamFlops : kSgdFlops) * p, bytes_per_parameter * p)});
  }

  std::vector<LayerCost> layers;
  int64_t parameters = 0;

 private:
  void add_elementwise(const std::string& name, CostCategory category, double elements,
                       double forward_flops, double backward_flops, bool after_batchnorm) {
    const double a = act_bytes_;
    // Forward reads x, writes y; backward reads dy and the saved tensor,
    // writes dx. Fused into the BatchNorm: forward writes y only, backward
    // reads dy only (the BatchNorm row reads x and writes dx).
    layers.push_back(LayerCost{
        name,
        category,
        pass(forward_flops * elements, 2 * a * elements, (after_batchnorm ? 1 : 2) * a * elements),
        pass(backward_flops * elements, 3 * a * elements, (after_batchnorm ? 1 : 3) * a * elements),
        {}});
  }

  // A convolution or linear layer: `weights` includes the bias;
  // bias_flops = one add per output when there is a bias.
  void add_parameterized(const std::string& name, CostCategory category, double input,
                         double output, double weights, double macs, double bias_flops,
                         bool input_grad) {
    const double a = act_bytes_;
    // The layer reads (and writes the gradient of) the weights in the
    // activation dtype under mixed precision, after a cast from f32 (read 4,
    // write 2) that backward undoes for the gradient (read 2, write 4).
    const double weight_bytes = mixed_precision_ ? a : kParamBytes;
    const double cast_bytes = mixed_precision_ ? (kParamBytes + a) * weights : 0.0;
    LayerCost layer{name, category, {}, {}, {}};
    layer.forward =
        pass(2 * macs + bias_flops, a * input + weight_bytes * weights + a * output + cast_bytes);
    // Backward: dW = dy^T x (reads dy, x; writes dW), dx = dy W (reads W,
    // writes dx; skipped without input_grad), db = sum(dy).
    double backward_bytes = a * output + a * input + weight_bytes * weights + cast_bytes;
    double backward_flops = 2 * macs + bias_flops;
    if (input_grad) {
      backward_bytes += weight_bytes * weights + a * input;
      backward_flops += 2 * macs;
    }
    layer.backward = pass(backward_flops, backward_bytes);
    layers.push_back(layer);
    parameters += static_cast<int64_t>(weights);
  }

  double batch_;
  double act_bytes_;
  bool mixed_precision_;
};

void check_options(const StepCostOptions& o) {
  auto fail = [](const std::string& what) {
    throw std::invalid_argument("mobilenet_v3_step_cost: " + what);
  };
  if (o.image_size <= 0) fail("image_size must be positive, got " + std::to_string(o.image_size));
  if (o.batch_size <= 0) fail("batch_size must be positive, got " + std::to_string(o.batch_size));
  if (o.activation_bytes != 2 && o.activation_bytes != 4) {
    fail("activation_bytes must be 4 (f32) or 2 (f16 mixed precision), got " +
         std::to_string(o.activation_bytes));
  }
  if (o.model.num_classes <= 0) {
    fail("num_classes must be positive, got " + std::to_string(o.model.num_classes));
  }
  if (!(o.model.width_mult > 0.0)) {
    fail("width_mult must be positive, got " + std::to_string(o.model.width_mult));
  }
  if (o.model.channel_divisor <= 0) {
    fail("channel_divisor must be positive, got " + std::to_string(o.model.channel_divisor));
  }
}

}  // namespace

PassCost& PassCost::operator+=(const PassCost& other) {
  flops += other.flops;
  bytes += other.bytes;
  fused_bytes += other.fused_bytes;
  return *this;
}

PassCost LayerCost::total() const {
  PassCost sum = forward;
  sum += backward;
  sum += update;
  return sum;
}

const char* cost_category_name(CostCategory category) {
  switch (category) {
    case CostCategory::stem: return "stem conv";
    case CostCategory::conv1x1: return "conv 1x1";
    case CostCategory::depthwise: return "depthwise";
    case CostCategory::linear: return "linear";
    case CostCategory::batchnorm: return "batchnorm";
    case CostCategory::activation: return "activations";
    case CostCategory::squeeze_excite: return "squeeze-excite";
    case CostCategory::residual_add: return "residual add";
    case CostCategory::pooling: return "avgpool";
    case CostCategory::dropout: return "dropout";
    case CostCategory::loss: return "loss";
    case CostCategory::optimizer: return "optimizer";
  }
  return "?";
}

PassCost StepCost::forward() const {
  PassCost sum;
  for (const LayerCost& l : layers) sum += l.forward;
  return sum;
}

PassCost StepCost::backward() const {
  PassCost sum;
  for (const LayerCost& l : layers) sum += l.backward;
  return sum;
}

PassCost StepCost::update() const {
  PassCost sum;
  for (const LayerCost& l : layers) sum += l.update;
  return sum;
}

PassCost StepCost::total() const {
  PassCost sum = forward();
  sum += backward();
  sum += update();
  return sum;
}

std::vector<LayerCost> StepCost::by_category() const {
  std::vector<LayerCost> rows;
  for (int i = 0; i < kCostCategoryCount; ++i) {
    const auto category = static_cast<CostCategory>(i);
    rows.push_back(LayerCost{cost_category_name(category), category, {}, {}, {}});
  }
  for (const LayerCost& l : layers) {
    LayerCost& row = rows[static_cast<size_t>(l.category)];
    row.forward += l.forward;
    row.backward += l.backward;
    row.update += l.update;
  }
  return rows;
}

double StepCost::arithmetic_intensity() const {
  const PassCost t = total();
  return t.flops / t.bytes;
}

double StepCost::fused_arithmetic_intensity() const {
  const PassCost t = total();
  return t.flops / t.fused_bytes;
}

StepCost mobilenet_v3_step_cost(const StepCostOptions& options) {
  check_options(options);
  const MobileNetV3Options& model = options.model;
  const std::vector<InvertedResidualConfig> rows = mobilenet_v3_config(model);
  StepWalker walk(options);
  int64_t h = options.image_size;

  // features.0: the stem; the images need no gradient.
  walk.conv_norm_activation("features.0", CostCategory::stem, 3, h, rows.front().input_channels, 3,
                            2, 1, Act::hardswish, false);
  for (size_t i = 0; i < rows.size(); ++i) {
    const InvertedResidualConfig& r = rows[i];
    const std::string block = "features." + std::to_string(i + 1) + ".block.";
    const Act act = r.use_hardswish ? Act::hardswish : Act::relu;
    const int64_t in_height = h;
    int child = 0;
    if (r.expanded_channels != r.input_channels) {
      walk.conv_norm_activation(block + std::to_string(child++), CostCategory::conv1x1,
                                r.input_channels, h, r.expanded_channels, 1, 1, 1, act, true);
    }
    walk.conv_norm_activation(block + std::to_string(child++), CostCategory::depthwise,
                              r.expanded_channels, h, r.expanded_channels, r.kernel, r.stride,
                              r.expanded_channels, act, true);
    if (r.use_se) {
      // As InvertedResidual: make_divisible(expanded / 4 (integer), divisor).
      const int64_t squeeze =
          make_divisible(static_cast<double>(r.expanded_channels / 4), model.channel_divisor);
      walk.squeeze_excite(block + std::to_string(child++), r.expanded_channels, squeeze, h);
    }
    walk.conv_norm_activation(block + std::to_string(child++), CostCategory::conv1x1,
                              r.expanded_channels, h, r.out_channels, 1, 1, 1, Act::none, true);
    if (r.stride == 1 && r.input_channels == r.out_channels) {
      walk.residual_add(
          "features." + std::to_string(i + 1) + ".add",
          static_cast<double>(options.batch_size * r.out_channels * in_height * in_height));
    }
  }
  const int64_t last_in = rows.back().out_channels;
  const int64_t last_out = 6 * last_in;
  walk.conv_norm_activation("features." + std::to_string(rows.size() + 1), CostCategory::conv1x1,
                            last_in, h, last_out, 1, 1, 1, Act::hardswish, true);
  walk.global_pool("avgpool", last_out, h);
  const int64_t hidden = make_divisible(
      static_cast<double>(model.arch == MobileNetV3Arch::large ? 1280 : 1024) * model.width_mult,
      model.channel_divisor);
  walk.linear("classifier.0", last_out, hidden);
  walk.activation("classifier.1", CostCategory::activation, Act::hardswish,
                  static_cast<double>(options.batch_size * hidden), false);
  walk.dropout("classifier.2", hidden);
  walk.linear("classifier.3", hidden, model.num_classes);
  walk.cross_entropy(model.num_classes);
  walk.optimizer(options.optimizer);

  StepCost cost;
  cost.options = options;
  cost.layers = std::move(walk.layers);
  cost.parameters = walk.parameters;
  return cost;
}

AchievedRate achieved_rate(const StepCost& cost, double seconds_per_step,
                           double bandwidth_bytes_per_second) {
  if (!(seconds_per_step > 0.0)) {
    throw std::invalid_argument("achieved_rate: seconds_per_step must be positive, got " +
                                std::to_string(seconds_per_step));
  }
  if (!(bandwidth_bytes_per_second >= 0.0)) {
    throw std::invalid_argument("achieved_rate: bandwidth must be positive (or 0 for none), got " +
                                std::to_string(bandwidth_bytes_per_second));
  }
  const PassCost t = cost.total();
  AchievedRate r;
  r.flops_per_second = t.flops / seconds_per_step;
  r.bytes_per_second = t.bytes / seconds_per_step;
  r.fused_bytes_per_second = t.fused_bytes / seconds_per_step;
  if (bandwidth_bytes_per_second > 0.0) {
    r.fraction_of_bandwidth = r.bytes_per_second / bandwidth_bytes_per_second;
    r.fused_fraction_of_bandwidth = r.fused_bytes_per_second / bandwidth_bytes_per_second;
  }
  return r;
}

double measure_host_copy_bandwidth(int threads, int64_t bytes, int repeats) {
  if (threads <= 0) {
    throw std::invalid_argument("measure_host_copy_bandwidth: threads must be positive, got " +
                                std::to_string(threads));
  }
  if (bytes <= 0 || repeats <= 0) {
    throw std::invalid_argument("measure_host_copy_bandwidth: bytes and repeats must be positive");
  }
  const int64_t count = bytes / static_cast<int64_t>(sizeof(double));
  // Uninitialized arrays, first touched below by the threads that copy them.
  std::unique_ptr<double[]> source(new double[static_cast<size_t>(count)]);
  std::unique_ptr<double[]> target(new double[static_cast<size_t>(count)]);
  double* src = source.get();
  double* dst = target.get();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < count; ++i) {
    src[i] = static_cast<double>(i & 1023);
    dst[i] = 0.0;
  }
  double best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < count; ++i) dst[i] = src[i];
    best = std::min(
        best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  // Keep the copy observable so it cannot be optimized away.
  volatile double sink = dst[count / 2];
  (void)sink;
  return 2.0 * static_cast<double>(count) * sizeof(double) / best;
}

}  // namespace b3
