// CUDA kernels of 2-D batch normalization followed by an activation (none,
// ReLU or Hardswish; none is plain BatchNorm2d, the others MobileNetV3's
// ConvNormActivation blocks), on raw device memory. Semantics:
// out = act(batch_norm2d(x)) with PyTorch's formulas (layers/batchnorm2d.h),
// in one pass over memory in each direction (the CPU kernels,
// layers/batchnorm2d_cpu.h, have the same shape):
//   forward:  the per-channel statistics, then out = act(y), y = (x - mean) *
//             invstd * weight + bias, written once (y itself is never stored);
//   backward: takes g = dL/d out and the forward's INPUT x, recomputes y per
//             element exactly as the forward did, and runs BatchNorm's
//             backward with gy = act'(y) * g in place of dL/dy:
//               sum_g = sum(gy), sum_gc = sum(gy * (x - mean))
//               grad_bias = sum_g, grad_weight = sum_gc * invstd
//               training:  grad_x = weight * invstd * (gy - sum_g / M
//                                    - (x - mean) * invstd^2 * sum_gc / M)
//               inference: grad_x = weight * invstd * gy
//             (one reduction pass and one grad_x pass; no activation pass).
// act'(y): relu: 1 for y > 0, else 0; hardswish: 0 for y < -3, y / 3 + 1/2
// for -3 <= y <= 3, 1 for y > 3 (PyTorch's choices at the kinks).
//
// x, out, g, grad_x: dense [N, C, H, W] in layout.format (NCHW or NHWC), f32
// or f16; f16 is loaded into f32, y and act(y) are computed in f32 and the
// output is rounded once (so a fused f16 output can differ from the unfused
// sequence, which rounds y to f16 before the activation, by one f16 rounding).
// y is computed as fmaf((x - mean) * invstd, weight, bias) with each
// operation rounded as written (no compiler contraction), identically in the
// forward and the backward, so the backward's act'(y) sees the very y whose
// act(y) the forward wrote. Everything per channel is f32 [C]: weight, bias,
// running_mean, running_var, save_mean, save_invstd, grad_weight, grad_bias.
//
// Training forward: mean and biased variance per channel over M = N*H*W
//   values (Welford in f32, fixed-order combine: deterministic);
//   save_mean = mean, save_invstd = 1 / sqrt(var + eps);
//   running_mean = (1 - momentum) * running_mean + momentum * mean
//   running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)
// Inference forward: mean and invstd from the running statistics (written to
//   save_mean/save_invstd, which the backward then takes).
// Backward: `training` says which forward produced save_mean/save_invstd; it
//   needs the forward's weight AND bias (to recompute y).
//
// weight and bias may be null (affine = false: 1 and 0); running_mean and
// running_var are both null or both set in training (both required in
// inference); any of grad_x, grad_weight, grad_bias may be null to skip it.
// out must not alias x (the backward needs x) and grad_x must not alias g.
// An empty batch does nothing (the inference forward still writes
// save_mean/save_invstd). Training needs M > 1. The training forward and the
// backward need `workspace`: device memory of at least
// batch_norm_workspace_bytes(layout) bytes, reusable between calls on the
// same stream. Defined in batchnorm2d_cuda.cu (CUDA builds).
#pragma once

#include <cstddef>
#include <cstdint>

#include "layers/activations.h"  // Activation
#include "tensor/activation_layout.h"
#include "tensor/cuda_stream.h"
#include "tensor/half.h"

namespace b3::cuda {

B3_CUDA_LAUNCHER(size_t batch_norm_workspace_bytes(const ActivationLayout& layout));

B3_CUDA_LAUNCHER(void batch_norm_forward_training(
    const float* x, const float* weight, const float* bias, float* running_mean, float* running_var,
    float* out, float* save_mean, float* save_invstd, const ActivationLayout& layout,
    double momentum, double eps, Activation activation, void* workspace, size_t workspace_bytes,
    const Stream& stream));
B3_CUDA_LAUNCHER(void batch_norm_forward_training(
    const Half* x, const float* weight, const float* bias, float* running_mean, float* running_var,
    Half* out, float* save_mean, float* save_invstd, const ActivationLayout& layout,
    double momentum, double eps, Activation activation, void* workspace, size_t workspace_bytes,
    const Stream& stream));

B3_CUDA_LAUNCHER(void batch_norm_forward_inference(
    const float* x, const float* weight, const float* bias, const float* running_mean,
    const float* running_var, float* out, float* save_mean, float* save_invstd,
    const ActivationLayout& layout, double eps, Activation activation, const Stream& stream));
B3_CUDA_LAUNCHER(void batch_norm_forward_inference(
    const Half* x, const float* weight, const float* bias, const float* running_mean,
    const float* running_var, Half* out, float* save_mean, float* save_invstd,
    const ActivationLayout& layout, double eps, Activation activation, const Stream& stream));

B3_CUDA_LAUNCHER(void batch_norm_backward(
    const float* x, const float* grad_out, const float* weight, const float* bias,
    const float* save_mean, const float* save_invstd, float* grad_x, float* grad_weight,
    float* grad_bias, const ActivationLayout& layout, bool training, Activation activation,
    void* workspace, size_t workspace_bytes, const Stream& stream));
B3_CUDA_LAUNCHER(void batch_norm_backward(
    const Half* x, const Half* grad_out, const float* weight, const float* bias,
    const float* save_mean, const float* save_invstd, Half* grad_x, float* grad_weight,
    float* grad_bias, const ActivationLayout& layout, bool training, Activation activation,
    void* workspace, size_t workspace_bytes, const Stream& stream));

// num_batches_tracked += 1, for the one-element i64 counter in device memory,
// queued on `stream` (a one-thread kernel: no copy to the host and back, so no
// host wait, and a CUDA graph that captures the step replays the increment).
B3_CUDA_LAUNCHER(void batch_norm_count_batch(int64_t* num_batches_tracked, const Stream& stream));

}  // namespace b3::cuda
