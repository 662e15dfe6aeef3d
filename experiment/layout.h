// The layout experiment (`b3 layout`): what memory layout does to one
// training step, at one batch size.
//
// The step is train_step() (train/trainer.h: forward, cross-entropy, backward,
// Adam), the same the training loop runs, timed by time_train_steps()
// (experiment/step_timing.h) on synthetic tensors made once per measurement,
// so data loading plays no part. The factors:
//   layout     NCHW (contiguous) or NHWC (channels_last) input and activations
//   channels   MobileNetV3Options::channel_divisor 1, 8 (torchvision) or 16
//   batch      as given, or padded up to a multiple of 8 with extra images
//              (images/s counts only the real ones: padding must pay for itself)
//   storage    aligned (the allocator's default), or deliberately misaligned by
//              misalign_bytes: the input batch and every parameter.
//              Gradients, Adam's state and activations keep the default
//              alignment: ops allocate them, and there is (by design) no
//              global allocator setting to change that.
// By default one factor is changed at a time from the baseline (NHWC, divisor
// 8, batch as given, aligned); `full` runs all 24 combinations. Variants are
// interleaved round-robin over the repeats; each measurement builds a fresh
// model and optimizer (Adam, PyTorch's default lr 1e-3), runs the warm-up
// steps, then times the steps.
//
// On a GPU each fresh model moves to the device, its convolution weights laid
// out in the variant's format (model.to(device), model.to(memory_format)), in
// mixed precision by default (f16 autocast, f32 master weights, GradScaler;
// amp off for plain f32), with Adam's fused CUDA update. Misaligned
// parameters are the f32 master weights; autocast's f16 copies of them are
// made by the ops with the default alignment. On the CPU the weights stay
// NCHW as built and only the input takes the variant's layout.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "tensor/device.h"
#include "tensor/tensor.h"

namespace b3::experiment {

struct LayoutConfig {
  std::string device = "cpu";  // cpu | cuda
  std::string model = "mobilenet_v3_large";
  int64_t batch_size = 127;
  int64_t image_size = 0;  // 0: 224 on a GPU, 32 on the CPU
  int64_t steps = 0;       // 0: 10 on a GPU, 5 on the CPU
  int64_t warmup = 2;
  int64_t repeats = 3;
  int64_t misalign_bytes = 4;
  bool full = false;
  std::optional<bool> amp;  // unset: on for cuda, off for cpu
};

struct LayoutVariant {
  std::string name;
  MemoryFormat format = MemoryFormat::channels_last;
  int64_t channel_divisor = 8;
  bool pad_batch = false;
  bool misaligned = false;
};

// The baseline first, then one factor changed at a time; or, with `full`,
// every combination (named by describe_variant()).
std::vector<LayoutVariant> layout_variants(bool full);
// "nhwc, div 8, unpadded, aligned".
std::string describe_variant(const LayoutVariant& v);

// The config resolved for a device: defaults filled in, checked.
struct LayoutPlan {
  LayoutConfig config;
  Device device;
  bool amp = false;
  size_t alignment = 0;      // the device allocator's
  int64_t padded_batch = 0;  // the batch rounded up to a multiple of 8
  std::string device_text;   // "cuda:0" or "cpu (<model name>, N threads)"
};

// Throws std::invalid_argument for an unusable device, amp on the CPU, or
// misalign_bytes outside [1, alignment - 1].
LayoutPlan plan_layout(const LayoutConfig& config);

struct LayoutMeasurement {
  LayoutVariant variant;
  int64_t batch = 0;  // images per step, padding included
  int64_t parameters = 0;
  std::vector<double> step_seconds, real_images_per_second;  // one per repeat
};

// Every variant measured `repeats` times, interleaved; `on_measured` (may
// be empty) sees each measurement as it ends, with its 0-based repeat.
std::vector<LayoutMeasurement> run_layout(
    const LayoutPlan& plan,
    const std::function<void(const LayoutMeasurement&, int64_t repeat)>& on_measured = {});

// A copy of `t` in fresh storage that starts `bytes` past the alignment
// boundary (same values, shape and memory format).
Tensor misaligned_copy(const Tensor& t, size_t bytes);

}  // namespace b3::experiment
