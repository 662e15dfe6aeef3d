// CUDA kernels of 2-D batch normalization (semantics in layers/batchnorm2d.h,
// PyTorch's) on raw device memory.
//
// x, y, grad_y, grad_x: dense [N, C, H, W] in layout.format, f32 or f16 (f16
// is loaded into f32 and each output rounded once). Everything per channel
// is f32 [C]: weight, bias, running_mean, running_var, save_mean,
// save_invstd, grad_weight, grad_bias (f16 activations with f32 statistics,
// as torch.cuda.amp runs BatchNorm).
//
// Training forward, per channel c over its M = N*H*W values:
//   mean, var (biased) by Welford's algorithm in f32, combined across threads
//   and blocks with Chan's formula in a fixed order (deterministic);
//   save_mean = mean, save_invstd = 1 / sqrt(var + eps);
//   running_mean = (1 - momentum) * running_mean + momentum * mean
//   running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)
//   y = (x - mean) * invstd * weight + bias
// Inference forward: mean and invstd from the running statistics (written to
//   save_mean/save_invstd, which the backward then takes), same normalization.
// Backward, from the forward's save_mean/save_invstd:
//   sum_g = sum(g), sum_gc = sum(g * (x - mean))
//   grad_bias = sum_g, grad_weight = sum_gc * invstd
//   training:  grad_x = weight * invstd * (g - sum_g / M - (x - mean) * invstd^2 * sum_gc / M)
//   inference: grad_x = weight * invstd * g
// weight and bias may be null (affine = false: 1 and 0); running_mean and
// running_var are both null or both set; any of grad_x, grad_weight,
// grad_bias may be null to skip it. An empty batch (no elements) does nothing.
// The reductions need `workspace` (device memory of at least
// batch_norm_workspace_bytes(layout) bytes, reusable between calls on the same
// stream). Defined in batchnorm2d_cuda.cu.
#pragma once

#include <cstddef>

#include "tensor/activation_layout.h"
#include "tensor/cuda_stream.h"
#include "tensor/half.h"

namespace b3::cuda {

B3_CUDA_LAUNCHER(size_t batch_norm_workspace_bytes(const ActivationLayout& layout));

B3_CUDA_LAUNCHER(void batch_norm_forward_training(
    const float* x, const float* weight, const float* bias, float* running_mean, float* running_var,
    float* y, float* save_mean, float* save_invstd, const ActivationLayout& layout, double momentum,
    double eps, void* workspace, size_t workspace_bytes, const Stream& stream));
B3_CUDA_LAUNCHER(void batch_norm_forward_training(
    const Half* x, const float* weight, const float* bias, float* running_mean, float* running_var,
    Half* y, float* save_mean, float* save_invstd, const ActivationLayout& layout, double momentum,
    double eps, void* workspace, size_t workspace_bytes, const Stream& stream));

B3_CUDA_LAUNCHER(void batch_norm_forward_inference(
    const float* x, const float* weight, const float* bias, const float* running_mean,
    const float* running_var, float* y, float* save_mean, float* save_invstd,
    const ActivationLayout& layout, double eps, const Stream& stream));
B3_CUDA_LAUNCHER(void batch_norm_forward_inference(
    const Half* x, const float* weight, const float* bias, const float* running_mean,
    const float* running_var, Half* y, float* save_mean, float* save_invstd,
    const ActivationLayout& layout, double eps, const Stream& stream));

// `training` says which forward produced save_mean/save_invstd.
B3_CUDA_LAUNCHER(void batch_norm_backward(const float* x, const float* grad_y, const float* weight,
                                          const float* save_mean, const float* save_invstd,
                                          float* grad_x, float* grad_weight, float* grad_bias,
                                          const ActivationLayout& layout, bool training,
                                          void* workspace, size_t workspace_bytes,
                                          const Stream& stream));
B3_CUDA_LAUNCHER(void batch_norm_backward(const Half* x, const Half* grad_y, const float* weight,
                                          const float* save_mean, const float* save_invstd,
                                          Half* grad_x, float* grad_weight, float* grad_bias,
                                          const ActivationLayout& layout, bool training,
                                          void* workspace, size_t workspace_bytes,
                                          const Stream& stream));

}  // namespace b3::cuda
