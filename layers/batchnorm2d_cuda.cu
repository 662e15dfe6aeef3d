// Batch normalization on CUDA (formulas in batchnorm2d_cuda.h).
//
// The per-channel reductions (statistics, gradient sums) and their planning
// live in batchnorm2d_cuda_common.cuh, shared with the fused BatchNorm +
// activation kernels (batchnorm_activation_cuda.cu); see its comment for the
// two-step, fixed-order scheme. The element-wise passes here (normalize, input
// gradient) are grid-stride loops that find each element's channel from its
// index.
#include "layers/batchnorm2d_cuda.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "layers/batchnorm2d_cuda_common.cuh"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cuda_kernels.cuh"

namespace b3::cuda {

namespace {

template <typename T, typename Index>
__global__ void normalize_kernel(const T* __restrict__ x, const float* __restrict__ mean,
                                 const float* __restrict__ invstd, const float* __restrict__ weight,
                                 const float* __restrict__ bias, T* __restrict__ y, Index n,
                                 ChannelOf<Index> channel_of) {
  for (Index i = blockIdx.x * Index{blockDim.x} + threadIdx.x; i < n;
       i += Index{gridDim.x} * blockDim.x) {
    const Index c = channel_of(i);
    float v = (to_float(x[i]) - mean[c]) * invstd[c];
    if (weight != nullptr) v *= weight[c];
    if (bias != nullptr) v += bias[c];
    y[i] = from_float<T>(v);
  }
}

template <typename T, typename Index>
__global__ void grad_input_kernel(const T* __restrict__ x, const T* __restrict__ g,
                                  const float* __restrict__ mean,
                                  const float* __restrict__ coefficients, T* __restrict__ grad_x,
                                  Index n, ChannelOf<Index> channel_of) {
  for (Index i = blockIdx.x * Index{blockDim.x} + threadIdx.x; i < n;
       i += Index{gridDim.x} * blockDim.x) {
    const Index c = channel_of(i);
    const float gain = coefficients[c * 3];
    const float mean_g = coefficients[c * 3 + 1];
    const float projection = coefficients[c * 3 + 2];
    const float value = gain * (to_float(g[i]) - mean_g - (to_float(x[i]) - mean[c]) * projection);
    grad_x[i] = from_float<T>(value);
  }
}

template <typename T>
void launch_normalize(const T* x, const float* mean, const float* invstd, const float* weight,
                      const float* bias, T* y, const ActivationLayout& layout,
                      const Stream& stream) {
  const int64_t n = layout.numel();
  if (n <= std::numeric_limits<uint32_t>::max() / 2) {
    normalize_kernel<<<detail::blocks_for(n), kThreadsPerBlock, 0, stream.handle>>>(
        x, mean, invstd, weight, bias, y, static_cast<uint32_t>(n), channel_of<uint32_t>(layout));
  } else {
    normalize_kernel<<<detail::blocks_for(n), kThreadsPerBlock, 0, stream.handle>>>(
        x, mean, invstd, weight, bias, y, n, channel_of<int64_t>(layout));
  }
  B3_CUDA_CHECK_LAUNCH("normalize_kernel");
}

// ----------------------------------------------------------- launchers --

template <typename T>
void forward_training(const T* x, const float* weight, const float* bias, float* running_mean,
                      float* running_var, T* y, float* save_mean, float* save_invstd,
                      const ActivationLayout& layout, double momentum, double eps, void* workspace,
                      size_t workspace_bytes, const Stream& stream) {
  const char* op = "cuda::batch_norm_forward_training";
  if (!check_training_forward(op, x, y, "y", running_mean, running_var, save_mean, save_invstd,
                              layout, momentum, eps)) {
    return;  // an empty batch leaves the running statistics alone
  }
  const int64_t c = layout.channels;
  const int64_t per_channel = layout.batch * layout.spatial();
  const ReducePlan plan = plan_reduction(layout, op);
  check_workspace(plan, layout, workspace, workspace_bytes, op);
  float* partials = static_cast<float*>(workspace);
  DeviceGuard guard(stream.device);
  launch_reduce(plan, device_pointer(x), device_pointer<T>(nullptr), StatsPolicy{}, layout,
                partials, stream);
  stats_finalize_kernel<<<detail::blocks_for(c, kWarpsPerBlock), kThreadsPerBlock, 0,
                          stream.handle>>>(partials, plan.slices, c, per_channel,
                                           static_cast<float>(eps), static_cast<float>(momentum),
                                           running_mean, running_var, save_mean, save_invstd);
  B3_CUDA_CHECK_LAUNCH("stats_finalize_kernel");
  launch_normalize(device_pointer(x), save_mean, save_invstd, weight, bias, device_pointer(y),
                   layout, stream);
}

template <typename T>
void forward_inference(const T* x, const float* weight, const float* bias,
                       const float* running_mean, const float* running_var, T* y, float* save_mean,
                       float* save_invstd, const ActivationLayout& layout, double eps,
                       const Stream& stream) {
  const char* op = "cuda::batch_norm_forward_inference";
  if (!check_inference_forward(op, x, y, "y", running_mean, running_var, save_mean, save_invstd,
                               layout, eps)) {
    return;
  }
  const int64_t c = layout.channels;
  DeviceGuard guard(stream.device);
  inference_stats_kernel<<<detail::blocks_for(c), kThreadsPerBlock, 0, stream.handle>>>(
      running_mean, running_var, c, static_cast<float>(eps), save_mean, save_invstd);
  B3_CUDA_CHECK_LAUNCH("inference_stats_kernel");
  if (layout.numel() == 0) return;
  launch_normalize(device_pointer(x), save_mean, save_invstd, weight, bias, device_pointer(y),
                   layout, stream);
}

template <typename T>
void backward(const T* x, const T* grad_y, const float* weight, const float* save_mean,
              const float* save_invstd, T* grad_x, float* grad_weight, float* grad_bias,
              const ActivationLayout& layout, bool training, void* workspace,
              size_t workspace_bytes, const Stream& stream) {
  const char* op = "cuda::batch_norm_backward";
  layout.check(op);
  if (layout.numel() == 0) return;
  const int64_t c = layout.channels;
  const int64_t per_channel = layout.batch * layout.spatial();
  detail::check_pointer(x, layout.numel(), op, "x");
  detail::check_pointer(grad_y, layout.numel(), op, "grad_y");
  detail::check_pointer(save_mean, c, op, "save_mean");
  detail::check_pointer(save_invstd, c, op, "save_invstd");
  const ReducePlan plan = plan_reduction(layout, op);
  check_workspace(plan, layout, workspace, workspace_bytes, op);
  float* partials = static_cast<float*>(workspace);
  float* coefficients = partials + plan.slices * c * GradSumsPolicy::kFields;
  DeviceGuard guard(stream.device);
  launch_reduce(plan, device_pointer(x), device_pointer(grad_y), GradSumsPolicy{save_mean}, layout,
                partials, stream);
  grad_finalize_kernel<<<detail::blocks_for(c, kWarpsPerBlock), kThreadsPerBlock, 0,
                         stream.handle>>>(partials, plan.slices, c, per_channel, weight,
                                          save_invstd, training, grad_weight, grad_bias,
                                          coefficients);
  B3_CUDA_CHECK_LAUNCH("grad_finalize_kernel");
  if (grad_x == nullptr) return;
  const int64_t n = layout.numel();
  if (n <= std::numeric_limits<uint32_t>::max() / 2) {
    grad_input_kernel<<<detail::blocks_for(n), kThreadsPerBlock, 0, stream.handle>>>(
        device_pointer(x), device_pointer(grad_y), save_mean, coefficients, device_pointer(grad_x),
        static_cast<uint32_t>(n), channel_of<uint32_t>(layout));
  } else {
    grad_input_kernel<<<detail::blocks_for(n), kThreadsPerBlock, 0, stream.handle>>>(
        device_pointer(x), device_pointer(grad_y), save_mean, coefficients, device_pointer(grad_x),
        n, channel_of<int64_t>(layout));
  }
  B3_CUDA_CHECK_LAUNCH("grad_input_kernel");
}

}  // namespace

size_t batch_norm_workspace_bytes(const ActivationLayout& layout) {
  layout.check("cuda::batch_norm_workspace_bytes");
  if (layout.numel() == 0) return 0;
  const ReducePlan plan = plan_reduction(layout, "cuda::batch_norm_workspace_bytes");
  return workspace_floats(plan, layout.channels) * sizeof(float);
}

void batch_norm_forward_training(const float* x, const float* weight, const float* bias,
                                 float* running_mean, float* running_var, float* y,
                                 float* save_mean, float* save_invstd,
                                 const ActivationLayout& layout, double momentum, double eps,
                                 void* workspace, size_t workspace_bytes, const Stream& stream) {
  forward_training(x, weight, bias, running_mean, running_var, y, save_mean, save_invstd, layout,
                   momentum, eps, workspace, workspace_bytes, stream);
}
void batch_norm_forward_training(const Half* x, const float* weight, const float* bias,
                                 float* running_mean, float* running_var, Half* y, float* save_mean,
                                 float* save_invstd, const ActivationLayout& layout,
                                 double momentum, double eps, void* workspace,
                                 size_t workspace_bytes, const Stream& stream) {
  forward_training(x, weight, bias, running_mean, running_var, y, save_mean, save_invstd, layout,
                   momentum, eps, workspace, workspace_bytes, stream);
}

void batch_norm_forward_inference(const float* x, const float* weight, const float* bias,
                                  const float* running_mean, const float* running_var, float* y,
                                  float* save_mean, float* save_invstd,
                                  const ActivationLayout& layout, double eps,
                                  const Stream& stream) {
  forward_inference(x, weight, bias, running_mean, running_var, y, save_mean, save_invstd, layout,
                    eps, stream);
}
void batch_norm_forward_inference(const Half* x, const float* weight, const float* bias,
                                  const float* running_mean, const float* running_var, Half* y,
                                  float* save_mean, float* save_invstd,
                                  const ActivationLayout& layout, double eps,
                                  const Stream& stream) {
  forward_inference(x, weight, bias, running_mean, running_var, y, save_mean, save_invstd, layout,
                    eps, stream);
}

void batch_norm_backward(const float* x, const float* grad_y, const float* weight,
                         const float* save_mean, const float* save_invstd, float* grad_x,
                         float* grad_weight, float* grad_bias, const ActivationLayout& layout,
                         bool training, void* workspace, size_t workspace_bytes,
                         const Stream& stream) {
  backward(x, grad_y, weight, save_mean, save_invstd, grad_x, grad_weight, grad_bias, layout,
           training, workspace, workspace_bytes, stream);
}
void batch_norm_backward(const Half* x, const Half* grad_y, const float* weight,
                         const float* save_mean, const float* save_invstd, Half* grad_x,
                         float* grad_weight, float* grad_bias, const ActivationLayout& layout,
                         bool training, void* workspace, size_t workspace_bytes,
                         const Stream& stream) {
  backward(x, grad_y, weight, save_mean, save_invstd, grad_x, grad_weight, grad_bias, layout,
           training, workspace, workspace_bytes, stream);
}

}  // namespace b3::cuda