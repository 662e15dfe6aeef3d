// CPU kernels of 2-D batch normalization followed by an activation (none,
// ReLU or Hardswish), semantics in layers/batchnorm2d.h (PyTorch's), shaped
// like the CUDA launchers of layers/batchnorm2d_cuda.h: raw pointers, the
// input's ActivationLayout (NCHW or NHWC, no conversion), the activation.
//
// x, out, grad_out, grad_x: dense [N, C, H, W] in layout.format, f32 or f64
// (T). weight, bias, running_mean, running_var, grad_weight, grad_bias: T
// [C], contiguous. save_mean and save_invstd: double [C] (the CUDA launchers
// keep them in f32): the mean and 1 / sqrt(var + eps) that normalized, which
// the forward writes and the backward reads. Per-channel sums accumulate in
// double, in an order that depends only on the shape (not on the thread
// count), so results are reproducible.
//
// Forward: out = act(y), y = x * scale[c] + shift[c], with scale = weight *
// invstd and shift = bias - mean * scale folded per channel as PyTorch's CPU
// kernel does; y itself is never stored.
//   training:  mean and the biased var of the batch (one pass over x); the
//              running statistics, when given, blended with `momentum`
//              (running_var with the unbiased var * M / (M - 1)); M must be > 1
//              (checked by the op); an empty batch leaves them alone.
//   inference: mean and var are running_mean and running_var.
// Backward: takes g = dL/d out, recomputes y from x in T exactly as the
// forward did, and forms gy = act'(y) * g inside BatchNorm's two passes:
//   sums S_g = sum(gy), S_gc = sum(gy * (x - mean))
//   grad_bias = S_g, grad_weight = S_gc * invstd
//   grad_x = gain * (gy - mean_g - (x - mean) * projection), gain = weight * invstd,
//     training:  mean_g = S_g / M, projection = S_gc * invstd^2 / M
//     inference: mean_g = 0,       projection = 0
// weight and bias may be null (affine = false: 1 and 0); running_mean and
// running_var are both null or both set (both required in inference); any of
// grad_x, grad_weight, grad_bias may be null to skip it. `training` in the
// backward says which forward wrote save_mean and save_invstd.
// Instantiated for float and double in batchnorm2d_cpu.cpp.
#pragma once

#include <vector>

#include "layers/activations.h"
#include "tensor/activation_layout.h"

namespace b3::cpu {

template <typename T>
void batch_norm_forward_training(const T* x, const T* weight, const T* bias, T* running_mean,
                                 T* running_var, T* out, double* save_mean, double* save_invstd,
                                 const ActivationLayout& layout, double momentum, double eps,
                                 Activation activation);

template <typename T>
void batch_norm_forward_inference(const T* x, const T* weight, const T* bias, const T* running_mean,
                                  const T* running_var, T* out, double* save_mean,
                                  double* save_invstd, const ActivationLayout& layout, double eps,
                                  Activation activation);

template <typename T>
void batch_norm_backward(const T* x, const T* grad_out, const T* weight, const T* bias,
                         const double* save_mean, const double* save_invstd, T* grad_x,
                         T* grad_weight, T* grad_bias, const ActivationLayout& layout,
                         bool training, Activation activation);

// Evaluation mode's per-channel constants in T, the ones
// batch_norm_forward_inference normalizes with (out = act(x * scale[c] +
// shift[c])): for a convolution that normalizes its outputs as it stores
// them (conv2d_cpu.h's OutputEpilogue), the same bits as the separate pass.
template <typename T>
void batch_norm_inference_scale_shift(const T* weight, const T* bias, const T* running_mean,
                                      const T* running_var, double eps, int64_t channels, T* scale,
                                      T* shift);

// The forward's elementwise map out = act(x * scale[c] + shift[c]) on NHWC
// data, its constants folded from the same inputs as the forward folds them
// (weight, bias, save_mean, save_invstd): the forward's NHWC pass runs it, so
// apply() gives the forward's bits. apply() maps `pixels` rows of C values
// that start at channel 0 on the calling thread alone (it opens no parallel
// region): a backward that needs an activation the forward did not keep can
// rebuild it image by image from inside its own threads.
template <typename T>
class NhwcNormalizedActivation {
 public:
  NhwcNormalizedActivation(const T* weight, const T* bias, const double* save_mean,
                           const double* save_invstd, int64_t channels, Activation activation);
  void apply(const T* x, T* out, int64_t pixels) const;
  // apply() over `pixels` rows split between the OpenMP threads.
  void apply_parallel(const T* x, T* out, int64_t pixels) const;

 private:
  int64_t channels_;
  int64_t period_;           // lcm(C, vector lanes): the patterns' period
  std::vector<T> patterns_;  // scale then shift, each period + lanes long
  Activation activation_;
};

// batch_norm_backward's input gradient for a consumer that forms it slice
// by slice (layers/batchnorm2d.cpp absorbs a 1x1 convolution's backward):
// the constructor runs the sums (one pass over grad_out and x, writing
// grad_weight and grad_bias when they are not null); rows() then writes
// dL/dx of NHWC pixels [first, first + count) on the calling thread alone,
// the bits batch_norm_backward writes there. x and grad_out must outlive it.
template <typename T>
class NhwcBatchNormInputGradient {
 public:
  NhwcBatchNormInputGradient(const T* x, const T* grad_out, const T* weight, const T* bias,
                             const double* save_mean, const double* save_invstd,
                             const ActivationLayout& layout, bool training, Activation activation,
                             T* grad_weight, T* grad_bias);
  void rows(int64_t first, int64_t count, T* out) const;

 private:
  const T* x_;
  const T* grad_out_;
  int64_t channels_;
  int64_t elements_;  // of the whole tensor
  int64_t period_;
  // mean, mean_g, projection, gain, scale, shift: period + lanes each
  std::vector<T> patterns_;
  Activation activation_;
};

}  // namespace b3::cpu
