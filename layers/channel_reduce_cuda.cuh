// Per-channel-row kernels shared by pooling_cuda.cu and squeeze_excite_cuda.cu,
// on a dense [N, C, H, W] tensor in either memory format (CUDA sources only):
//   channel sum:       out[n, c] = sum over (h, w) of a * b  (b optional) / divisor
//   channel broadcast: out[n, c, h, w] = a[n, c, h, w] (or 1) * v[n, c] / divisor
// The sums run in f32 in a fixed order (deterministic): NCHW gives each (n, c)
// row one warp reading its H*W contiguous values; NHWC gives each block 32
// adjacent channels (coalesced reads) and splits H*W over 8 thread rows whose
// partial sums are added in order.
#pragma once

#include <cstdint>
#include <limits>

#include "tensor/activation_layout.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cuda_kernels.cuh"

namespace b3::cuda::detail {

// Row n*C + c of flat element i of a dense [N, C, H, W] tensor.
template <typename Index>
struct ChannelRowOf {
  Index spatial;   // H*W
  Index channels;  // C
  bool channels_last;
  __device__ Index operator()(Index i) const {
    if (!channels_last) return i / spatial;                       // i = (n*C + c)*HW + hw
    return (i / (spatial * channels)) * channels + i % channels;  // i = (n*HW + hw)*C + c
  }
};

template <typename T>
__global__ void channel_sum_nchw_kernel(const T* __restrict__ a, const T* __restrict__ b,
                                        T* __restrict__ out, int64_t rows, int64_t spatial,
                                        float divisor) {
  const int64_t warps_per_block = blockDim.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  for (int64_t row = blockIdx.x * warps_per_block + threadIdx.x / kWarpSize; row < rows;
       row += int64_t{gridDim.x} * warps_per_block) {
    const int64_t base = row * spatial;
    float sum = 0.0f;
    for (int64_t i = lane; i < spatial; i += kWarpSize) {
      float v = to_float(a[base + i]);
      if (b != nullptr) v *= to_float(b[base + i]);
      sum += v;
    }
    sum = warp_sum(sum);
    if (lane == 0) out[row] = from_float<T>(sum / divisor);
  }
}

constexpr int kChannelTile = 32;  // channels per NHWC block (threadIdx.x)
constexpr int kSpatialSplit = 8;  // thread rows sharing one channel's H*W (threadIdx.y)

template <typename T>
__global__ void channel_sum_nhwc_kernel(const T* __restrict__ a, const T* __restrict__ b,
                                        T* __restrict__ out, int64_t batch, int64_t channels,
                                        int64_t spatial, float divisor) {
  __shared__ float partial[kSpatialSplit][kChannelTile + 1];
  const int64_t c = int64_t{blockIdx.x} * kChannelTile + threadIdx.x;
  // Every thread runs the same iterations (the bound depends on blockIdx.y
  // only), so the __syncthreads below are reached by the whole block.
  for (int64_t n = blockIdx.y; n < batch; n += gridDim.y) {
    float sum = 0.0f;
    if (c < channels) {
      const int64_t base = n * spatial * channels + c;
      for (int64_t hw = threadIdx.y; hw < spatial; hw += kSpatialSplit) {
        const int64_t i = base + hw * channels;
        float v = to_float(a[i]);
        if (b != nullptr) v *= to_float(b[i]);
        sum += v;
      }
    }
    partial[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && c < channels) {
      float total = 0.0f;
      for (int s = 0; s < kSpatialSplit; ++s) total += partial[s][threadIdx.x];
      out[n * channels + c] = from_float<T>(total / divisor);
    }
    __syncthreads();  // partial is rewritten by the next n
  }
}

template <typename T, typename Index>
__global__ void channel_broadcast_kernel(const T* a, const T* __restrict__ per_row, T* out, Index n,
                                         ChannelRowOf<Index> row_of, float divisor) {
  for (Index i = blockIdx.x * Index{blockDim.x} + threadIdx.x; i < n;
       i += Index{gridDim.x} * blockDim.x) {
    const float factor = to_float(per_row[row_of(i)]);
    const float value = a != nullptr ? to_float(a[i]) * factor : factor;
    out[i] = from_float<T>(value / divisor);
  }
}

// out[n*C + c] = sum_hw a (* b) / divisor. T is float or __half.
template <typename T>
void launch_channel_sum(const T* a, const T* b, T* out, const ActivationLayout& layout,
                        float divisor, const Stream& stream) {
  const int64_t rows = layout.batch * layout.channels;
  if (rows == 0) return;
  DeviceGuard guard(stream.device);
  if (!layout.channels_last()) {
    const int warps_per_block = kThreadsPerBlock / kWarpSize;
    channel_sum_nchw_kernel<<<blocks_for(rows, warps_per_block), kThreadsPerBlock, 0,
                              stream.handle>>>(a, b, out, rows, layout.spatial(), divisor);
    B3_CUDA_CHECK_LAUNCH("channel_sum_nchw_kernel");
  } else {
    const int64_t channel_tiles = (layout.channels + kChannelTile - 1) / kChannelTile;
    if (channel_tiles > std::numeric_limits<int>::max()) {
      throw std::invalid_argument("channel sum: too many channels in " + layout.str());
    }
    const dim3 grid(static_cast<unsigned int>(channel_tiles),
                    static_cast<unsigned int>(std::min<int64_t>(layout.batch, 65535)));
    const dim3 block(kChannelTile, kSpatialSplit);
    channel_sum_nhwc_kernel<<<grid, block, 0, stream.handle>>>(
        a, b, out, layout.batch, layout.channels, layout.spatial(), divisor);
    B3_CUDA_CHECK_LAUNCH("channel_sum_nhwc_kernel");
  }
}

// out[i] = (a[i] or 1) * per_row[row of i] / divisor over the whole tensor.
template <typename T>
void launch_channel_broadcast(const T* a, const T* per_row, T* out, const ActivationLayout& layout,
                              float divisor, const Stream& stream) {
  const int64_t n = layout.numel();
  if (n == 0) return;
  DeviceGuard guard(stream.device);
  if (n <= std::numeric_limits<uint32_t>::max() / 2) {  // 32-bit index math: cheaper divisions
    using Index = uint32_t;
    const ChannelRowOf<Index> row_of{static_cast<Index>(layout.spatial()),
                                     static_cast<Index>(layout.channels), layout.channels_last()};
    channel_broadcast_kernel<<<blocks_for(n), kThreadsPerBlock, 0, stream.handle>>>(
        a, per_row, out, static_cast<Index>(n), row_of, divisor);
  } else {
    using Index = int64_t;
    const ChannelRowOf<Index> row_of{layout.spatial(), layout.channels, layout.channels_last()};
    channel_broadcast_kernel<<<blocks_for(n), kThreadsPerBlock, 0, stream.handle>>>(
        a, per_row, out, n, row_of, divisor);
  }
  B3_CUDA_CHECK_LAUNCH("channel_broadcast_kernel");
}

}  // namespace b3::cuda::detail
