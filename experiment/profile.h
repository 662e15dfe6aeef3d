// The per-layer profile (`b3 profile --batch-sizes 127,128`): where the time
// of a training step goes, layer by layer, at each batch size side by side:
// the explanation the seed experiment lacked of why (or why not) a batch
// size matters.
//
// A "layer" is a top-level block of MobileNetV3: features.0 .. features.16,
// avgpool (with the flatten), classifier.0 .. classifier.3, and the loss.
// Forward: the blocks run one by one, each timed. Each block after the first
// gets its input as a fresh leaf (the previous output, detached, requiring
// grad), so its backward can be run and timed on its own.
// Backward: loss.backward() first, then, from the last block to the first,
// output_i.backward(gradient that reached input_{i+1}): every block's backward
// sees the real upstream gradient, and the sum is one whole backward pass.
// (Each cut adds one gradient copy into the leaf: small next to a block.)
// The cut pieces are a profiler, not a training step; beside them each
// repeat times one uncut train_step() (train/trainer.h, the step training
// runs, with its Adam update) for comparison.
// Times are the median over `repeats` profiled steps after `warmup` ones.
//
// On a GPU the model moves to the device (channels_last weights for NHWC)
// and runs in mixed precision by default: f16 autocast over each forward
// piece and the loss, the backward seeded with a GradScaler's scale_seed(),
// the seed train_step() uses, so gradients have a real step's magnitudes.
// Each piece is timed on the host clock between two synchronizations of the
// compute stream, so it includes the piece's kernel launch overhead, as
// eager training pays it. After the last batch size the cuDNN algorithm
// report is read (experiment/conv_algorithms.h).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "experiment/conv_algorithms.h"
#include "models/mobilenet_v3.h"
#include "tensor/device.h"

namespace b3::experiment {

struct ProfileConfig {
  std::string device = "cpu";  // cpu | cuda
  std::string model = "mobilenet_v3_large";
  std::string batch_sizes = "127,128";  // a size list (experiment/report.h)
  int64_t image_size = 0;               // 0: 224 on a GPU, 32 on the CPU
  int64_t repeats = 5;
  int64_t warmup = 1;
  std::string format = "nhwc";  // nchw | nhwc
  std::optional<bool> amp;      // unset: on for cuda, off for cpu
};

// The config resolved for its device.
struct ProfilePlan {
  ProfileConfig config;
  std::vector<int64_t> batch_sizes;  // parsed, in the order given
  Device device;
  bool amp = false;
  std::string device_text;  // "cuda:0" or "cpu (<model name>, N threads)"
};

// Throws std::invalid_argument for a bad size list, an unusable device or
// amp on the CPU.
ProfilePlan plan_profile(const ProfileConfig& config);

// One top-level block: how to run it, and what it holds.
struct Block {
  std::string name;
  std::string description;
  std::function<Tensor(const Tensor&)> run;
  std::string cpu_kernels;      // the CPU convolution paths inside, in order
  std::vector<ConvSite> convs;  // the convolutions inside, in order of execution
};

// The blocks of `model` (which must outlive them), without the loss.
std::vector<Block> blocks_of(MobileNetV3& model);
// The CPU algorithm layers/conv2d_cpu.cpp runs for one convolution in f32
// (cpu::conv2d_cpu_algorithm): "1x1 gemm", "im2col gemm", "depthwise" or
// "narrow direct".
std::string cpu_conv_kernel(const Conv2dOptions& options);

struct BlockTimes {
  std::vector<double> forward, backward;  // seconds, one per repeat
  Shape output_shape;
};

struct BatchProfile {
  int64_t batch = 0;
  std::vector<BlockTimes> blocks;  // the blocks, then the loss
  std::vector<double> whole_step;  // uncut train_step: forward, loss, backward, update
};

struct ProfileResult {
  std::vector<Block> blocks;           // names and contents (not runnable), then the loss
  std::vector<BatchProfile> profiles;  // one per batch size, in the order given
  std::string algorithm_report;        // the cuDNN algorithm cache (GPU), else ""
  ConvReport conv_report;              // algorithm_report parsed
};

// Profiles one batch size on a fresh model.
BatchProfile profile_batch(int64_t batch, const ProfilePlan& plan);

// Every batch size in turn (`on_batch`, may be empty, is told before each).
ProfileResult run_profile(const ProfilePlan& plan,
                          const std::function<void(int64_t batch)>& on_batch = {});

}  // namespace b3::experiment
