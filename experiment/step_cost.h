// The analytic cost of one MobileNetV3 training step (forward, cross-entropy,
// backward, optimizer update): FLOPs and a floor on DRAM traffic, per layer
// and in total, so that a measured step time can be read as a fraction of
// what the memory system allows. Nothing here runs the model: the walk
// follows mobilenet_v3_config() and the wiring of models/mobilenet_v3.cpp.
//
// FLOPs. A multiply-add is 2 FLOPs. Convolution forward is
// 2 * N * Ho * Wo * Cout * (Cin / groups) * k * k (+ N * Ho * Wo * Cout for a
// bias); backward-data and backward-weight cost the same each (the bias
// gradient N * Ho * Wo * Cout). The stem's backward-data is not counted: the
// images do not require a gradient, so autograd never computes it. Linear
// layers likewise (2 * N * in * out per product). Elementwise ops are counted
// per element with the constants in step_cost.cpp (kFlopsPer...), roughly:
// a compare, add or multiply is 1; exp or sqrt is 1. These are small next to
// the convolutions and matter only for the arithmetic intensity.
//
// Memory floor ("unfused"). Every op of the step is a separate pass that
// reads each of its inputs from DRAM once and writes each of its outputs to
// DRAM once; nothing stays in cache between ops, and nothing is read twice
// within an op (so a BatchNorm's statistics and normalization are one read of
// x: a lower bound, real kernels read x twice). Precisely:
//   forward   reads the inputs and the weights, writes the output (and any
//             extra tensor it saves, e.g. dropout's mask);
//   backward  reads grad_output plus the saved tensors its gradient formulas
//             need, writes grad_input and the parameter gradients; where one
//             tensor feeds two ops (a residual block's input, the SE input)
//             autograd adds the two gradients: a pass that reads both and
//             writes the sum (counted under the op that forks: "add" and SE);
//   update    the optimizer reads parameters, gradients and state and writes
//             parameters and state (SGD momentum: 5 x 4 bytes per parameter;
//             Adam: 7 x 4).
// Activations take activation_bytes per element (4: f32; 2: f16 under mixed
// precision); parameters, their gradients and optimizer state are f32. Under
// mixed precision each conv/linear weight is cast to an f16 copy every step
// (forward: read 4 bytes, write 2 per element; the layer reads the copy) and
// its f16 gradient is cast back (backward: read 2, write 4). Labels are int64.
// Not counted: zeroing gradients (set_to_none on the CPU), the loss scaler's
// inf check and unscale (assumed fused into the update), reading the loss,
// per-channel vectors other than BatchNorm's parameters and statistics.
//
// Memory floor ("fused"). As above, with two fusions a tuned kernel library
// does:
//   BatchNorm + activation as one op. Forward: the BatchNorm's write of its
//     output and the activation's read of it disappear (2 passes); backward:
//     the activation's read of its saved tensor, its write of grad and the
//     BatchNorm's read of that grad disappear (3 passes): the fused backward
//     reads grad_output and the BatchNorm input and writes grad_input.
//   Residual add into its neighbours. Forward: the project BatchNorm adds the
//     skip tensor in its epilogue, so the add's read of the BatchNorm output
//     and its own write disappear (2 passes; the skip read stays). Backward:
//     the block's first convolution adds the skip gradient in its
//     backward-data epilogue, so the accumulation pass's read of that
//     convolution's grad_input and its write disappear (2 passes).
// Everything else (SE, pooling, classifier, loss, update) is the same in both.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/mobilenet_v3.h"

namespace b3 {

// The rows of `b3 stepcost`'s table.
enum class CostCategory {
  stem,            // the first 3x3 stride-2 convolution
  conv1x1,         // expand, project and the last 1x1 convolution
  depthwise,       // the k x k depthwise convolutions
  linear,          // the classifier's two Linear layers
  batchnorm,       // every BatchNorm2d
  activation,      // ReLU / Hardswish after BatchNorm and in the classifier
  squeeze_excite,  // avgpool, fc1, ReLU, fc2, hardsigmoid, scale, grad accumulation
  residual_add,    // the block's residual add (and its gradient accumulation)
  pooling,         // the final global average pool
  dropout,         // the classifier's dropout
  loss,            // cross-entropy on the logits
  optimizer,       // the parameter update
};
inline constexpr int kCostCategoryCount = 12;
const char* cost_category_name(CostCategory category);

enum class StepOptimizerKind { sgd_momentum, adam };

struct StepCostOptions {
  // arch, num_classes, width_mult and channel_divisor are used (dropout, BN
  // constants and the seed do not change the cost).
  MobileNetV3Options model;
  int64_t image_size = 224;  // square images, height = width
  int64_t batch_size = 1;
  int64_t activation_bytes = 4;  // 4: f32; 2: f16 activations (mixed precision)
  StepOptimizerKind optimizer = StepOptimizerKind::sgd_momentum;
};

// The cost of one pass of one op. bytes: the unfused floor; fused_bytes: the
// fused floor (equal to bytes except for BatchNorm, activations after a
// BatchNorm, and residual adds).
struct PassCost {
  double flops = 0.0;
  double bytes = 0.0;
  double fused_bytes = 0.0;
  PassCost& operator+=(const PassCost& other);
};

struct LayerCost {
  std::string name;  // torchvision's module name, e.g. "features.4.block.1.0"; "loss", "optimizer"
  CostCategory category;
  PassCost forward, backward, update;  // update: only the optimizer's row
  PassCost total() const;
};

struct StepCost {
  StepCostOptions options;
  std::vector<LayerCost> layers;  // in forward order; loss and optimizer last
  int64_t parameters = 0;         // trainable parameters the update touches

  PassCost forward() const;
  PassCost backward() const;
  PassCost update() const;
  PassCost total() const;  // the whole step
  // One row per category (index = static_cast<int>(CostCategory)), summed.
  std::vector<LayerCost> by_category() const;
  // FLOPs per byte of the unfused / fused floor.
  double arithmetic_intensity() const;
  double fused_arithmetic_intensity() const;
};

// Throws std::invalid_argument (naming the argument and value) for a
// non-positive image size, batch size, class count, width_mult or
// channel_divisor, or activation_bytes other than 2 or 4.
StepCost mobilenet_v3_step_cost(const StepCostOptions& options);

// The floor's reading of a measured step: what it achieved and what fraction
// of `bandwidth_bytes_per_second` the floor traffic used. Throws
// std::invalid_argument for non-positive seconds or bandwidth.
struct AchievedRate {
  double flops_per_second = 0.0;
  double bytes_per_second = 0.0;        // unfused floor / seconds
  double fused_bytes_per_second = 0.0;  // fused floor / seconds
  double fraction_of_bandwidth = 0.0;   // bytes_per_second / bandwidth (0 if no bandwidth)
  double fused_fraction_of_bandwidth = 0.0;
};
AchievedRate achieved_rate(const StepCost& cost, double seconds_per_step,
                           double bandwidth_bytes_per_second);

// A host memory bandwidth for the floor to be compared against: copies a
// 256 MiB buffer into another with `threads` OpenMP threads (each thread its
// own contiguous chunk, both buffers touched first by the same threads), best
// of 3, counting read + write = 512 MiB moved per copy (a write-allocate cache
// also reads the destination, so the DRAM traffic is up to 1.5x this: the
// figure is what a copy achieves, as STREAM's "Copy" reports it). Bytes/s.
double measure_host_copy_bandwidth(int threads, int64_t bytes = int64_t{256} << 20,
                                   int repeats = 3);

}  // namespace b3
