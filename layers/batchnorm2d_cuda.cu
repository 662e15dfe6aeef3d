// Batch normalization + activation on CUDA (formulas and contract in
// batchnorm2d_cuda.h).
//
// The per-channel reductions (statistics, gradient sums) and their planning
// are batchnorm2d_cuda_reduce.cuh's; see its comment for the two-step,
// fixed-order scheme. What is fused with the activation:
//   forward:  one element-wise pass out = act(y), y recomputed from x and the
//             per-channel statistics (no y in memory);
//   backward: the reduce pass accumulates gy = act'(y) * g instead of g
//             (GatedGradSumsPolicy recomputes y per element), and the grad_x
//             pass recomputes y and gy again; the activation's backward pass
//             and its dL/dy tensor disappear.
// Per element and training step that saves one write and one read in the
// forward (y) and one write and one read in the backward (dL/dy). Plain
// BatchNorm is the same kernels with the identity (Activation::none).
//
// Each pass is templated on the activation (a functor with forward(y) and
// backward(y, g)); the launchers switch on Activation once per call.
#include "layers/batchnorm2d_cuda.h"

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "layers/batchnorm2d_cuda_reduce.cuh"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cuda_kernels.cuh"

namespace b3::cuda {

namespace {

// --------------------------------------------------------- activations --

// The BatchNorm output of one element: (x - mean) * invstd * weight + bias,
// every operation rounded as written (intrinsics are never contracted or
// reassociated), so the forward and both backward passes get the same bits.
__device__ __forceinline__ float normalized(float x, float mean, float invstd, float weight,
                                            float bias) {
  return __fmaf_rn(__fmul_rn(__fsub_rn(x, mean), invstd), weight, bias);
}

// PyTorch's definitions and derivatives (layers/activations.h), as
// layers/activations_cuda.cu computes them. backward(y, g) = act'(y) * g.
struct IdentityActivation {
  __device__ static float forward(float y) { return y; }
  __device__ static float backward(float, float g) { return g; }
};

struct ReluActivation {
  __device__ static float forward(float y) { return y > 0.0f ? y : 0.0f; }
  __device__ static float backward(float y, float g) { return y > 0.0f ? g : 0.0f; }
};

struct HardswishActivation {
  __device__ static float forward(float y) { return y * fminf(fmaxf(y + 3.0f, 0.0f), 6.0f) / 6.0f; }
  __device__ static float backward(float y, float g) {
    const float slope = y < -3.0f ? 0.0f : (y > 3.0f ? 1.0f : y / 3.0f + 0.5f);
    return g * slope;
  }
};

// Calls fn(Activation{}) with the functor of `activation`, which
// check_activation has accepted.
template <typename Fn>
void with_activation(Activation activation, Fn&& fn) {
  switch (activation) {
    case Activation::none: fn(IdentityActivation{}); return;
    case Activation::relu: fn(ReluActivation{}); return;
    case Activation::hardswish: fn(HardswishActivation{}); return;
    case Activation::hardsigmoid: return;
  }
}

void check_activation(Activation activation, const char* op) {
  switch (activation) {
    case Activation::none:
    case Activation::relu:
    case Activation::hardswish: return;
    case Activation::hardsigmoid:
      throw std::invalid_argument(std::string(op) +
                                  ": hardsigmoid is not fused (expected none, relu or hardswish)");
  }
  throw std::invalid_argument(std::string(op) + ": unknown activation (value " +
                              std::to_string(static_cast<int>(activation)) +
                              "); expected none, relu or hardswish");
}

// ------------------------------------------------------------ reduction --

// The fused backward's sums: (sum gy, sum gy * (x - mean)), gy = act'(y) * g.
template <typename Activation>
struct GatedGradSumsPolicy {
  static constexpr int kFields = 2;
  const float* mean;    // [C] save_mean
  const float* invstd;  // [C] save_invstd
  const float* weight;  // [C] or null (1)
  const float* bias;    // [C] or null (0)
  struct Channel {
    float mean, invstd, weight, bias;
  };
  __device__ Channel channel(int64_t c) const {
    return {mean[c], invstd[c], weight != nullptr ? weight[c] : 1.0f,
            bias != nullptr ? bias[c] : 0.0f};
  }
  __device__ static void add(float* acc, float x, float g, const Channel& ch) {
    const float gy = Activation::backward(normalized(x, ch.mean, ch.invstd, ch.weight, ch.bias), g);
    acc[0] += gy;
    acc[1] += gy * (x - ch.mean);
  }
  __device__ static void combine(float* a, const float* b) {
    a[0] += b[0];
    a[1] += b[1];
  }
};
static_assert(GatedGradSumsPolicy<IdentityActivation>::kFields == GradSumsPolicy::kFields,
              "the fused backward uses BatchNorm's workspace layout (workspace_floats)");

// -------------------------------------------------- element-wise kernels --

template <typename Activation, typename T, typename Index>
__global__ void normalize_activate_kernel(const T* __restrict__ x, const float* __restrict__ mean,
                                          const float* __restrict__ invstd,
                                          const float* __restrict__ weight,
                                          const float* __restrict__ bias, T* __restrict__ out,
                                          Index n, ChannelOf<Index> channel_of) {
  for (Index i = blockIdx.x * Index{blockDim.x} + threadIdx.x; i < n;
       i += Index{gridDim.x} * blockDim.x) {
    const Index c = channel_of(i);
    const float y =
        normalized(to_float(x[i]), mean[c], invstd[c], weight != nullptr ? weight[c] : 1.0f,
                   bias != nullptr ? bias[c] : 0.0f);
    out[i] = from_float<T>(Activation::forward(y));
  }
}

// coefficients[c] = (gain, mean of gy, projection) from grad_finalize_kernel.
template <typename Activation, typename T, typename Index>
__global__ void gated_grad_input_kernel(
    const T* __restrict__ x, const T* __restrict__ g, const float* __restrict__ mean,
    const float* __restrict__ invstd, const float* __restrict__ weight,
    const float* __restrict__ bias, const float* __restrict__ coefficients, T* __restrict__ grad_x,
    Index n, ChannelOf<Index> channel_of) {
  for (Index i = blockIdx.x * Index{blockDim.x} + threadIdx.x; i < n;
       i += Index{gridDim.x} * blockDim.x) {
    const Index c = channel_of(i);
    const float xv = to_float(x[i]);
    const float m = mean[c];
    const float y = normalized(xv, m, invstd[c], weight != nullptr ? weight[c] : 1.0f,
                               bias != nullptr ? bias[c] : 0.0f);
    const float gy = Activation::backward(y, to_float(g[i]));
    const float gain = coefficients[c * 3];
    const float mean_gy = coefficients[c * 3 + 1];
    const float projection = coefficients[c * 3 + 2];
    grad_x[i] = from_float<T>(gain * (gy - mean_gy - (xv - m) * projection));
  }
}

// ------------------------------------------------------------ launches --

// 32-bit indices where the tensor allows (cheaper channel arithmetic).
inline bool small_index(const ActivationLayout& layout) {
  return layout.numel() <= std::numeric_limits<uint32_t>::max() / 2;
}

template <typename Activation, typename T>
void launch_normalize_activate(const T* x, const float* mean, const float* invstd,
                               const float* weight, const float* bias, T* out,
                               const ActivationLayout& layout, const Stream& stream) {
  const int64_t n = layout.numel();
  if (small_index(layout)) {
    normalize_activate_kernel<Activation>
        <<<detail::blocks_for(n), kThreadsPerBlock, 0, stream.handle>>>(
            x, mean, invstd, weight, bias, out, static_cast<uint32_t>(n),
            channel_of<uint32_t>(layout));
  } else {
    normalize_activate_kernel<Activation>
        <<<detail::blocks_for(n), kThreadsPerBlock, 0, stream.handle>>>(
            x, mean, invstd, weight, bias, out, n, channel_of<int64_t>(layout));
  }
  B3_CUDA_CHECK_LAUNCH("normalize_activate_kernel");
}

template <typename Activation, typename T>
void launch_gated_grad_input(const T* x, const T* g, const float* mean, const float* invstd,
                             const float* weight, const float* bias, const float* coefficients,
                             T* grad_x, const ActivationLayout& layout, const Stream& stream) {
  const int64_t n = layout.numel();
  if (small_index(layout)) {
    gated_grad_input_kernel<Activation>
        <<<detail::blocks_for(n), kThreadsPerBlock, 0, stream.handle>>>(
            x, g, mean, invstd, weight, bias, coefficients, grad_x, static_cast<uint32_t>(n),
            channel_of<uint32_t>(layout));
  } else {
    gated_grad_input_kernel<Activation>
        <<<detail::blocks_for(n), kThreadsPerBlock, 0, stream.handle>>>(
            x, g, mean, invstd, weight, bias, coefficients, grad_x, n, channel_of<int64_t>(layout));
  }
  B3_CUDA_CHECK_LAUNCH("gated_grad_input_kernel");
}

void check_not_aliased(const void* a, const void* b, const char* op, const char* a_name,
                       const char* b_name) {
  if (a != nullptr && a == b) {
    throw std::invalid_argument(std::string(op) + ": " + a_name + " and " + b_name +
                                " are the same memory; the fused op cannot run in place (the "
                                "backward needs the forward's input)");
  }
}

// ----------------------------------------------------------- launchers --

template <typename T>
void forward_training(const T* x, const float* weight, const float* bias, float* running_mean,
                      float* running_var, T* out, float* save_mean, float* save_invstd,
                      const ActivationLayout& layout, double momentum, double eps,
                      Activation activation, void* workspace, size_t workspace_bytes,
                      const Stream& stream) {
  const char* op = "cuda::batch_norm_forward_training";
  check_activation(activation, op);
  if (!check_training_forward(op, x, out, "out", running_mean, running_var, save_mean, save_invstd,
                              layout, momentum, eps)) {
    return;  // an empty batch leaves the running statistics alone
  }
  check_not_aliased(x, out, op, "x", "out");
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
  with_activation(activation, [&](auto act) {
    launch_normalize_activate<decltype(act)>(device_pointer(x), save_mean, save_invstd, weight,
                                             bias, device_pointer(out), layout, stream);
  });
}

template <typename T>
void forward_inference(const T* x, const float* weight, const float* bias,
                       const float* running_mean, const float* running_var, T* out,
                       float* save_mean, float* save_invstd, const ActivationLayout& layout,
                       double eps, Activation activation, const Stream& stream) {
  const char* op = "cuda::batch_norm_forward_inference";
  check_activation(activation, op);
  if (!check_inference_forward(op, x, out, "out", running_mean, running_var, save_mean, save_invstd,
                               layout, eps)) {
    return;
  }
  check_not_aliased(x, out, op, "x", "out");
  const int64_t c = layout.channels;
  DeviceGuard guard(stream.device);
  inference_stats_kernel<<<detail::blocks_for(c), kThreadsPerBlock, 0, stream.handle>>>(
      running_mean, running_var, c, static_cast<float>(eps), save_mean, save_invstd);
  B3_CUDA_CHECK_LAUNCH("inference_stats_kernel");
  if (layout.numel() == 0) return;
  with_activation(activation, [&](auto act) {
    launch_normalize_activate<decltype(act)>(device_pointer(x), save_mean, save_invstd, weight,
                                             bias, device_pointer(out), layout, stream);
  });
}

template <typename T>
void backward(const T* x, const T* grad_out, const float* weight, const float* bias,
              const float* save_mean, const float* save_invstd, T* grad_x, float* grad_weight,
              float* grad_bias, const ActivationLayout& layout, bool training,
              Activation activation, void* workspace, size_t workspace_bytes,
              const Stream& stream) {
  const char* op = "cuda::batch_norm_backward";
  layout.check(op);
  check_activation(activation, op);
  if (layout.numel() == 0) return;
  const int64_t c = layout.channels;
  const int64_t per_channel = layout.batch * layout.spatial();
  detail::check_pointer(x, layout.numel(), op, "x");
  detail::check_pointer(grad_out, layout.numel(), op, "grad_out");
  detail::check_pointer(save_mean, c, op, "save_mean");
  detail::check_pointer(save_invstd, c, op, "save_invstd");
  check_not_aliased(grad_x, grad_out, op, "grad_x", "grad_out");
  check_not_aliased(grad_x, x, op, "grad_x", "x");
  const ReducePlan plan = plan_reduction(layout, op);
  check_workspace(plan, layout, workspace, workspace_bytes, op);
  float* partials = static_cast<float*>(workspace);
  float* coefficients = partials + plan.slices * c * GradSumsPolicy::kFields;
  DeviceGuard guard(stream.device);
  with_activation(activation, [&](auto act) {
    using Activation = decltype(act);
    launch_reduce(plan, device_pointer(x), device_pointer(grad_out),
                  GatedGradSumsPolicy<Activation>{save_mean, save_invstd, weight, bias}, layout,
                  partials, stream);
    grad_finalize_kernel<<<detail::blocks_for(c, kWarpsPerBlock), kThreadsPerBlock, 0,
                           stream.handle>>>(partials, plan.slices, c, per_channel, weight,
                                            save_invstd, training, grad_weight, grad_bias,
                                            coefficients);
    B3_CUDA_CHECK_LAUNCH("grad_finalize_kernel");
    if (grad_x == nullptr) return;
    launch_gated_grad_input<Activation>(device_pointer(x), device_pointer(grad_out), save_mean,
                                        save_invstd, weight, bias, coefficients,
                                        device_pointer(grad_x), layout, stream);
  });
}

__global__ void count_batch_kernel(int64_t* counter) { *counter += 1; }

}  // namespace

void batch_norm_count_batch(int64_t* num_batches_tracked, const Stream& stream) {
  detail::check_pointer(num_batches_tracked, 1, "cuda::batch_norm_count_batch",
                        "num_batches_tracked");
  DeviceGuard guard(stream.device);
  count_batch_kernel<<<1, 1, 0, stream.handle>>>(num_batches_tracked);
  B3_CUDA_CHECK_LAUNCH("count_batch_kernel");
}

size_t batch_norm_workspace_bytes(const ActivationLayout& layout) {
  const char* op = "cuda::batch_norm_workspace_bytes";
  layout.check(op);
  if (layout.numel() == 0) return 0;
  const ReducePlan plan = plan_reduction(layout, op);
  return workspace_floats(plan, layout.channels) * sizeof(float);
}

void batch_norm_forward_training(const float* x, const float* weight, const float* bias,
                                 float* running_mean, float* running_var, float* out,
                                 float* save_mean, float* save_invstd,
                                 const ActivationLayout& layout, double momentum, double eps,
                                 Activation activation, void* workspace, size_t workspace_bytes,
                                 const Stream& stream) {
  forward_training(x, weight, bias, running_mean, running_var, out, save_mean, save_invstd, layout,
                   momentum, eps, activation, workspace, workspace_bytes, stream);
}
void batch_norm_forward_training(const Half* x, const float* weight, const float* bias,
                                 float* running_mean, float* running_var, Half* out,
                                 float* save_mean, float* save_invstd,
                                 const ActivationLayout& layout, double momentum, double eps,
                                 Activation activation, void* workspace, size_t workspace_bytes,
                                 const Stream& stream) {
  forward_training(x, weight, bias, running_mean, running_var, out, save_mean, save_invstd, layout,
                   momentum, eps, activation, workspace, workspace_bytes, stream);
}

void batch_norm_forward_inference(const float* x, const float* weight, const float* bias,
                                  const float* running_mean, const float* running_var, float* out,
                                  float* save_mean, float* save_invstd,
                                  const ActivationLayout& layout, double eps, Activation activation,
                                  const Stream& stream) {
  forward_inference(x, weight, bias, running_mean, running_var, out, save_mean, save_invstd, layout,
                    eps, activation, stream);
}
void batch_norm_forward_inference(const Half* x, const float* weight, const float* bias,
                                  const float* running_mean, const float* running_var, Half* out,
                                  float* save_mean, float* save_invstd,
                                  const ActivationLayout& layout, double eps, Activation activation,
                                  const Stream& stream) {
  forward_inference(x, weight, bias, running_mean, running_var, out, save_mean, save_invstd, layout,
                    eps, activation, stream);
}

void batch_norm_backward(const float* x, const float* grad_out, const float* weight,
                         const float* bias, const float* save_mean, const float* save_invstd,
                         float* grad_x, float* grad_weight, float* grad_bias,
                         const ActivationLayout& layout, bool training, Activation activation,
                         void* workspace, size_t workspace_bytes, const Stream& stream) {
  backward(x, grad_out, weight, bias, save_mean, save_invstd, grad_x, grad_weight, grad_bias,
           layout, training, activation, workspace, workspace_bytes, stream);
}
void batch_norm_backward(const Half* x, const Half* grad_out, const float* weight,
                         const float* bias, const float* save_mean, const float* save_invstd,
                         Half* grad_x, float* grad_weight, float* grad_bias,
                         const ActivationLayout& layout, bool training, Activation activation,
                         void* workspace, size_t workspace_bytes, const Stream& stream) {
  backward(x, grad_out, weight, bias, save_mean, save_invstd, grad_x, grad_weight, grad_bias,
           layout, training, activation, workspace, workspace_bytes, stream);
}

}  // namespace b3::cuda
