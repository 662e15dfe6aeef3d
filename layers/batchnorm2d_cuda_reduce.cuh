// The per-channel reductions of the batch normalization kernels
// (layers/batchnorm2d_cuda.cu, CUDA sources only), with their planning,
// finalize kernels and argument checks.
//
// The per-channel reductions (Welford statistics in the forward, the two
// gradient sums in the backward) run in two steps, both in a fixed order so
// results are the same bits every run:
//   1. a reduce kernel: grid = (channel groups) x (slices of the M values);
//      each thread accumulates its share, the block combines its threads, and
//      writes one partial per (slice, channel) into the workspace; what is
//      accumulated is a policy (StatsPolicy, GradSumsPolicy, or the fused
//      op's gated gradient sums);
//   2. a finalize kernel: one warp per channel combines the slices' partials
//      and writes the per-channel results.
// Two reduce layouts: "channels inner" (NHWC, or any tensor with H*W == 1:
// element (m, c) at m*C + c) gives each block 32 adjacent channels, so a warp
// reads 32 consecutive values; "channels outer" (NCHW: element (n, c, hw) at
// (n*C + c)*HW + hw) gives each block one channel and a range of its values.
//
// Everything here is in an unnamed namespace (each including .cu file gets
// its own kernels; host helpers are inline), so include it from .cu files only.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "tensor/activation_layout.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cuda_kernels.cuh"
#include "tensor/cuda_stream.h"

namespace b3::cuda {

namespace {

using detail::device_pointer;
using detail::from_float;
using detail::kThreadsPerBlock;
using detail::kWarpSize;
using detail::to_float;

// ------------------------------------------------------- accumulators --

// Welford's running (count, mean, M2) for one more value.
__device__ __forceinline__ void welford_add(float* acc, float x) {
  acc[0] += 1.0f;
  const float delta = x - acc[1];
  acc[1] += delta / acc[0];
  acc[2] += delta * (x - acc[1]);
}

// Chan et al.'s combination of two (count, mean, M2) triples into a.
__device__ __forceinline__ void welford_combine(float* a, const float* b) {
  if (b[0] == 0.0f) return;
  if (a[0] == 0.0f) {
    a[0] = b[0];
    a[1] = b[1];
    a[2] = b[2];
    return;
  }
  const float n = a[0] + b[0];
  const float delta = b[1] - a[1];
  const float b_share = b[0] / n;
  a[1] += delta * b_share;
  a[2] += b[2] + delta * delta * a[0] * b_share;
  a[0] = n;
}

// A reduction policy says what the reduce kernels accumulate per channel:
//   kFields                 floats per accumulator (and per partial);
//   Channel channel(c)      the per-channel values add() needs, read once per
//                           thread (an object passed to the kernel by value);
//   add(acc, x, g, channel) one more element (g is 0 when no g is given);
//   combine(a, b)           merges accumulator b into a.

// Forward statistics: (count, mean, M2) of x.
struct StatsPolicy {
  static constexpr int kFields = 3;
  struct Channel {};
  __device__ Channel channel(int64_t) const { return {}; }
  __device__ static void add(float* acc, float x, float, Channel) { welford_add(acc, x); }
  __device__ static void combine(float* a, const float* b) { welford_combine(a, b); }
};

// Backward sums: (sum g, sum g * (x - mean)).
struct GradSumsPolicy {
  static constexpr int kFields = 2;
  const float* mean;  // [C]
  struct Channel {
    float mean;
  };
  __device__ Channel channel(int64_t c) const { return {mean[c]}; }
  __device__ static void add(float* acc, float x, float g, Channel channel) {
    acc[0] += g;
    acc[1] += g * (x - channel.mean);
  }
  __device__ static void combine(float* a, const float* b) {
    a[0] += b[0];
    a[1] += b[1];
  }
};

// ------------------------------------------------------ reduce kernels --

constexpr int kTileChannels = 32;   // channels-inner: channels per block (threadIdx.x)
constexpr int kTileRows = 8;        // channels-inner: rows of values per block (threadIdx.y)
constexpr int kOuterThreads = 256;  // channels-outer: threads per block (one channel)
constexpr int kMaxSlices = 512;

template <typename Policy, typename T>
__global__ void reduce_channels_inner_kernel(const T* __restrict__ x, const T* __restrict__ g,
                                             const Policy policy, int64_t rows, int64_t channels,
                                             float* __restrict__ partials) {
  constexpr int K = Policy::kFields;
  __shared__ float shared[K][kTileRows][kTileChannels + 1];
  const int64_t c = int64_t{blockIdx.x} * kTileChannels + threadIdx.x;
  float acc[K] = {};
  if (c < channels) {
    const typename Policy::Channel channel = policy.channel(c);
    for (int64_t r = int64_t{blockIdx.y} * kTileRows + threadIdx.y; r < rows;
         r += int64_t{gridDim.y} * kTileRows) {
      const int64_t i = r * channels + c;
      Policy::add(acc, to_float(x[i]), g != nullptr ? to_float(g[i]) : 0.0f, channel);
    }
  }
  for (int k = 0; k < K; ++k) shared[k][threadIdx.y][threadIdx.x] = acc[k];
  __syncthreads();
  if (threadIdx.y == 0 && c < channels) {
    float total[K];
    for (int k = 0; k < K; ++k) total[k] = shared[k][0][threadIdx.x];
    for (int s = 1; s < kTileRows; ++s) {
      float other[K];
      for (int k = 0; k < K; ++k) other[k] = shared[k][s][threadIdx.x];
      Policy::combine(total, other);
    }
    float* out = partials + (int64_t{blockIdx.y} * channels + c) * K;
    for (int k = 0; k < K; ++k) out[k] = total[k];
  }
}

template <typename Policy, typename T, typename Index>
__global__ void reduce_channels_outer_kernel(const T* __restrict__ x, const T* __restrict__ g,
                                             const Policy policy, Index per_channel, Index inner,
                                             Index channels, float* __restrict__ partials) {
  constexpr int K = Policy::kFields;
  __shared__ float shared[K][kOuterThreads];
  const Index c = blockIdx.x;
  const typename Policy::Channel channel = policy.channel(c);
  float acc[K] = {};
  for (Index j = Index{blockIdx.y} * kOuterThreads + threadIdx.x; j < per_channel;
       j += Index{gridDim.y} * kOuterThreads) {
    const Index outer = j / inner;
    const Index i = (outer * channels + c) * inner + (j - outer * inner);
    Policy::add(acc, to_float(x[i]), g != nullptr ? to_float(g[i]) : 0.0f, channel);
  }
  for (int k = 0; k < K; ++k) shared[k][threadIdx.x] = acc[k];
  __syncthreads();
  for (int stride = kOuterThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      float a[K], b[K];
      for (int k = 0; k < K; ++k) {
        a[k] = shared[k][threadIdx.x];
        b[k] = shared[k][threadIdx.x + stride];
      }
      Policy::combine(a, b);
      for (int k = 0; k < K; ++k) shared[k][threadIdx.x] = a[k];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    float* out = partials + (int64_t{blockIdx.y} * channels + c) * K;
    for (int k = 0; k < K; ++k) out[k] = shared[k][0];
  }
}

// ---------------------------------------------------- finalize kernels --

constexpr int kWarpsPerBlock = kThreadsPerBlock / kWarpSize;

__global__ void stats_finalize_kernel(const float* __restrict__ partials, int64_t slices,
                                      int64_t channels, int64_t per_channel, float eps,
                                      float momentum, float* __restrict__ running_mean,
                                      float* __restrict__ running_var,
                                      float* __restrict__ save_mean,
                                      float* __restrict__ save_invstd) {
  const int lane = threadIdx.x % kWarpSize;
  for (int64_t c = int64_t{blockIdx.x} * kWarpsPerBlock + threadIdx.x / kWarpSize; c < channels;
       c += int64_t{gridDim.x} * kWarpsPerBlock) {
    float acc[3] = {0.0f, 0.0f, 0.0f};
    for (int64_t s = lane; s < slices; s += kWarpSize) {
      welford_combine(acc, partials + (s * channels + c) * 3);
    }
    // Tree over the lanes: lane i takes lane i + offset (fixed order; lanes
    // past the end read themselves and are never used).
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
      float other[3];
      for (int k = 0; k < 3; ++k) other[k] = __shfl_down_sync(0xffffffffu, acc[k], offset);
      welford_combine(acc, other);
    }
    if (lane == 0) {
      const float m = static_cast<float>(per_channel);
      const float mean = acc[1];
      const float biased_var = acc[2] / m;
      save_mean[c] = mean;
      save_invstd[c] = 1.0f / sqrtf(biased_var + eps);
      if (running_mean != nullptr) {
        const float unbiased_var = acc[2] / (m - 1.0f);
        running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * mean;
        running_var[c] = (1.0f - momentum) * running_var[c] + momentum * unbiased_var;
      }
    }
  }
}

// Per channel: the gradient sums, grad_weight and grad_bias, and the three
// coefficients of the input gradient (gain, mean of g, projection).
__global__ void grad_finalize_kernel(const float* __restrict__ partials, int64_t slices,
                                     int64_t channels, int64_t per_channel,
                                     const float* __restrict__ weight,
                                     const float* __restrict__ invstd, bool training,
                                     float* __restrict__ grad_weight, float* __restrict__ grad_bias,
                                     float* __restrict__ coefficients) {
  const int lane = threadIdx.x % kWarpSize;
  for (int64_t c = int64_t{blockIdx.x} * kWarpsPerBlock + threadIdx.x / kWarpSize; c < channels;
       c += int64_t{gridDim.x} * kWarpsPerBlock) {
    float sum_g = 0.0f, sum_gc = 0.0f;
    for (int64_t s = lane; s < slices; s += kWarpSize) {
      sum_g += partials[(s * channels + c) * 2];
      sum_gc += partials[(s * channels + c) * 2 + 1];
    }
    sum_g = detail::warp_sum(sum_g);
    sum_gc = detail::warp_sum(sum_gc);
    if (lane == 0) {
      const float is = invstd[c];
      const float m = static_cast<float>(per_channel);
      if (grad_bias != nullptr) grad_bias[c] = sum_g;
      if (grad_weight != nullptr) grad_weight[c] = sum_gc * is;
      coefficients[c * 3] = (weight != nullptr ? weight[c] : 1.0f) * is;
      coefficients[c * 3 + 1] = training ? sum_g / m : 0.0f;
      coefficients[c * 3 + 2] = training ? sum_gc / m * is * is : 0.0f;
    }
  }
}

__global__ void inference_stats_kernel(const float* __restrict__ running_mean,
                                       const float* __restrict__ running_var, int64_t channels,
                                       float eps, float* __restrict__ save_mean,
                                       float* __restrict__ save_invstd) {
  for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < channels;
       c += int64_t{gridDim.x} * blockDim.x) {
    save_mean[c] = running_mean[c];
    save_invstd[c] = 1.0f / sqrtf(running_var[c] + eps);
  }
}

// ----------------------------------------------- element-wise helpers --

// The channel of flat element i of a dense [N, C, H, W] tensor.
template <typename Index>
struct ChannelOf {
  Index spatial;
  Index channels;
  bool channels_inner;
  __device__ Index operator()(Index i) const {
    return channels_inner ? i % channels : (i / spatial) % channels;
  }
};

// ------------------------------------------------------------ planning --

struct ReducePlan {
  bool channels_inner = false;
  int64_t slices = 1;
  dim3 grid;
  dim3 block;
};

inline int64_t clamp_slices(int64_t wanted, int64_t blocks_per_slice) {
  const int64_t budget = std::max<int64_t>(1, 1024 / std::max<int64_t>(blocks_per_slice, 1));
  return std::clamp<int64_t>(wanted, 1, std::min<int64_t>(kMaxSlices, budget));
}

// How the per-channel reductions split the work: about 1024 blocks at most,
// each thread with a run of values to itself.
inline ReducePlan plan_reduction(const ActivationLayout& layout, const char* op) {
  const int64_t channels = layout.channels;
  const int64_t per_channel = layout.batch * layout.spatial();
  ReducePlan plan;
  plan.channels_inner = layout.channels_last() || layout.spatial() == 1;
  if (plan.channels_inner) {
    const int64_t tiles = (channels + kTileChannels - 1) / kTileChannels;
    if (tiles > std::numeric_limits<int>::max()) {
      throw std::invalid_argument(std::string(op) + ": too many channels in " + layout.str());
    }
    plan.slices = clamp_slices((per_channel + 255) / 256, tiles);
    plan.grid = dim3(static_cast<unsigned int>(tiles), static_cast<unsigned int>(plan.slices));
    plan.block = dim3(kTileChannels, kTileRows);
  } else {
    if (channels > std::numeric_limits<int>::max()) {
      throw std::invalid_argument(std::string(op) + ": too many channels in " + layout.str());
    }
    plan.slices = clamp_slices((per_channel + 4095) / 4096, channels);
    plan.grid = dim3(static_cast<unsigned int>(channels), static_cast<unsigned int>(plan.slices));
    plan.block = dim3(kOuterThreads);
  }
  return plan;
}

inline size_t workspace_floats(const ReducePlan& plan, int64_t channels) {
  const int64_t stats = plan.slices * channels * StatsPolicy::kFields;
  const int64_t grads = plan.slices * channels * GradSumsPolicy::kFields + 3 * channels;
  return static_cast<size_t>(std::max(stats, grads));
}

inline void check_workspace(const ReducePlan& plan, const ActivationLayout& layout,
                            const void* workspace, size_t workspace_bytes, const char* op) {
  const size_t needed = workspace_floats(plan, layout.channels) * sizeof(float);
  if (workspace == nullptr || workspace_bytes < needed) {
    throw std::invalid_argument(
        std::string(op) + ": workspace of " + std::to_string(workspace_bytes) + " bytes, " +
        layout.str() + " needs " + std::to_string(needed) + " (batch_norm_workspace_bytes)");
  }
  if (reinterpret_cast<uintptr_t>(workspace) % alignof(float) != 0) {
    throw std::invalid_argument(std::string(op) + ": workspace is not aligned for floats");
  }
}

// x and g are device element pointers (detail::device_t); g may be null.
template <typename Policy, typename T>
inline void launch_reduce(const ReducePlan& plan, const T* x, const T* g, const Policy& policy,
                          const ActivationLayout& layout, float* partials, const Stream& stream) {
  const int64_t per_channel = layout.batch * layout.spatial();
  if (plan.channels_inner) {
    reduce_channels_inner_kernel<Policy><<<plan.grid, plan.block, 0, stream.handle>>>(
        x, g, policy, per_channel, layout.channels, partials);
    B3_CUDA_CHECK_LAUNCH("reduce_channels_inner_kernel");
    return;
  }
  if (layout.numel() <= std::numeric_limits<uint32_t>::max() / 2) {
    using Index = uint32_t;
    reduce_channels_outer_kernel<Policy><<<plan.grid, plan.block, 0, stream.handle>>>(
        x, g, policy, static_cast<Index>(per_channel), static_cast<Index>(layout.spatial()),
        static_cast<Index>(layout.channels), partials);
  } else {
    using Index = int64_t;
    reduce_channels_outer_kernel<Policy><<<plan.grid, plan.block, 0, stream.handle>>>(
        x, g, policy, static_cast<Index>(per_channel), static_cast<Index>(layout.spatial()),
        static_cast<Index>(layout.channels), partials);
  }
  B3_CUDA_CHECK_LAUNCH("reduce_channels_outer_kernel");
}

template <typename Index>
inline ChannelOf<Index> channel_of(const ActivationLayout& layout) {
  return ChannelOf<Index>{static_cast<Index>(layout.spatial()), static_cast<Index>(layout.channels),
                          layout.channels_last() || layout.spatial() == 1};
}

inline void check_scalars(const char* op, double momentum, double eps) {
  if (!(eps >= 0.0) || !std::isfinite(eps)) {
    throw std::invalid_argument(std::string(op) + ": eps " + std::to_string(eps) +
                                " must be finite and >= 0");
  }
  if (!std::isfinite(momentum)) {
    throw std::invalid_argument(std::string(op) + ": momentum must be finite");
  }
}

// The argument checks of a training forward: the layout, eps and momentum, running_mean and
// running_var given together or not at all, more than one value per channel, and the sizes of x,
// the output (named `out_name` in errors) and the saved statistics. Returns false for an empty
// batch, which leaves everything alone.
template <typename T>
inline bool check_training_forward(const char* op, const T* x, const T* out, const char* out_name,
                                   const float* running_mean, const float* running_var,
                                   const float* save_mean, const float* save_invstd,
                                   const ActivationLayout& layout, double momentum, double eps) {
  layout.check(op);
  check_scalars(op, momentum, eps);
  if ((running_mean == nullptr) != (running_var == nullptr)) {
    throw std::invalid_argument(std::string(op) +
                                ": running_mean and running_var must both be given or both null");
  }
  if (layout.numel() == 0) return false;
  const int64_t per_channel = layout.batch * layout.spatial();
  if (per_channel <= 1) {
    throw std::invalid_argument(std::string(op) +
                                ": expected more than 1 value per channel when training, got " +
                                layout.str());
  }
  const int64_t c = layout.channels;
  detail::check_pointer(x, layout.numel(), op, "x");
  detail::check_pointer(out, layout.numel(), op, out_name);
  detail::check_pointer(save_mean, c, op, "save_mean");
  detail::check_pointer(save_invstd, c, op, "save_invstd");
  return true;
}

// The argument checks of an inference forward (running statistics in use).
// Returns false when there are no channels (nothing to do).
template <typename T>
inline bool check_inference_forward(const char* op, const T* x, const T* out, const char* out_name,
                                    const float* running_mean, const float* running_var,
                                    const float* save_mean, const float* save_invstd,
                                    const ActivationLayout& layout, double eps) {
  layout.check(op);
  check_scalars(op, 0.0, eps);
  const int64_t c = layout.channels;
  if (c == 0) return false;
  detail::check_pointer(running_mean, c, op, "running_mean");
  detail::check_pointer(running_var, c, op, "running_var");
  detail::check_pointer(save_mean, c, op, "save_mean");
  detail::check_pointer(save_invstd, c, op, "save_invstd");
  detail::check_pointer(x, layout.numel(), op, "x");
  detail::check_pointer(out, layout.numel(), op, out_name);
  return true;
}

}  // namespace

}  // namespace b3::cuda
