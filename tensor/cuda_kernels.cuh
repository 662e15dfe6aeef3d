// Small device-side helpers shared by b3's CUDA kernels (.cu files only):
// f16 <-> f32 loads and stores (f16 is storage; the math runs in f32
// registers), launch sizes for grid-stride loops, and fixed-order warp and
// block sums. Fixed order matters: a sum computed by the same launch on the
// same shape gives the same bits every run, so training runs are repeatable.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "tensor/half.h"

namespace b3::cuda::detail {

static_assert(sizeof(Half) == sizeof(__half) && alignof(Half) == alignof(__half),
              "b3::Half and CUDA's __half must have the same layout: launchers reinterpret "
              "device pointers of one as the other");

// The device type behind a launcher's element type: float stays float, b3's
// Half (host storage type) becomes CUDA's __half.
template <typename T>
struct DeviceElement {
  using type = T;
};
template <>
struct DeviceElement<Half> {
  using type = __half;
};
template <typename T>
using device_t = typename DeviceElement<T>::type;

template <typename T>
device_t<T>* device_pointer(T* p) {
  return reinterpret_cast<device_t<T>*>(p);
}
template <typename T>
const device_t<T>* device_pointer(const T* p) {
  return reinterpret_cast<const device_t<T>*>(p);
}

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}

constexpr int kThreadsPerBlock = 256;
constexpr int kWarpSize = 32;

// Blocks for a grid-stride loop over n elements: enough to cover n once, at
// most 2^20 (the loop covers the rest). n must be > 0.
inline unsigned int blocks_for(int64_t n, int threads = kThreadsPerBlock) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned int>(std::min<int64_t>(blocks, int64_t{1} << 20));
}

// Throws std::invalid_argument unless 0 <= value (a count a launcher was given).
inline void check_nonnegative(int64_t value, const char* op, const char* name) {
  if (value < 0) {
    throw std::invalid_argument(std::string(op) + ": " + name + " = " + std::to_string(value) +
                                " must not be negative");
  }
}

// Throws std::invalid_argument if `p` is null while `count` elements are needed.
inline void check_pointer(const void* p, int64_t count, const char* op, const char* name) {
  if (p == nullptr && count > 0) {
    throw std::invalid_argument(std::string(op) + ": " + name + " is null");
  }
}

// Sum over the 32 lanes of a warp; every lane gets the result. Fixed order.
__device__ __forceinline__ float warp_sum(float value) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  }
  return value;
}

__device__ __forceinline__ float warp_max(float value) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
  }
  return value;
}

// Sum over a 1-D block of blockDim.x threads (a multiple of 32, at most
// 1024); `scratch` holds 32 floats of shared memory. The result is returned
// to every thread. Contains __syncthreads: call from all threads of the block.
__device__ __forceinline__ float block_sum(float value, float* scratch) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  value = warp_sum(value);
  __syncthreads();  // scratch may still be read by a previous block_sum
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  float total = lane < warps ? scratch[lane] : 0.0f;
  total = warp_sum(total);
  return total;
}

}  // namespace b3::cuda::detail
