// The dropout kernels of layers/dropout_cuda.h: the mask drawn from Philox,
// one four-element block per thread and trip, and the mask multiply, one
// grid-stride loop, f16 loaded into f32 registers and rounded once on the way
// out.
#include "layers/dropout_cuda.h"

#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cuda_kernels.cuh"
#include "tensor/philox.h"

namespace b3::cuda {

namespace {

using detail::device_pointer;
using detail::from_float;
using detail::to_float;

// No __restrict__ on x and out: out may alias x (each element is read before it is written).
template <typename T>
__global__ void apply_mask_kernel(const T* x, const T* __restrict__ mask, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = from_float<T>(__fmul_rn(to_float(x[i]), to_float(mask[i])));
  }
}

template <typename T>
__global__ void draw_mask_kernel(uint64_t key_value, const uint64_t* key_slot, uint32_t threshold,
                                 float scale, T* mask, int64_t n) {
  const uint64_t key = key_slot != nullptr ? *key_slot : key_value;
  const int64_t blocks = (n + 3) / 4;
  const T kept = from_float<T>(scale);
  const T dropped = from_float<T>(0.0f);
  for (int64_t b = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; b < blocks;
       b += int64_t{gridDim.x} * blockDim.x) {
    const philox::Block words = philox::block_of(key, static_cast<uint64_t>(b));
    for (int j = 0; j < 4; ++j) {
      const int64_t i = 4 * b + j;
      if (i < n) mask[i] = philox::keeps(words.word[j], threshold) ? kept : dropped;
    }
  }
}

template <typename T>
void launch_draw_mask(uint64_t key, const uint64_t* key_slot, uint32_t threshold, float scale,
                      T* mask, int64_t n, const Stream& stream) {
  const char* op = "cuda::draw_dropout_mask";
  detail::check_nonnegative(n, op, "n");
  if (n == 0) return;
  detail::check_pointer(mask, n, op, "mask");
  DeviceGuard guard(stream.device);
  const int64_t blocks = (n + 3) / 4;
  draw_mask_kernel<<<detail::blocks_for(blocks), detail::kThreadsPerBlock, 0, stream.handle>>>(
      key, key_slot, threshold, scale, device_pointer(mask), n);
  B3_CUDA_CHECK_LAUNCH("draw_mask_kernel");
}

template <typename T>
void launch_apply_mask(const T* x, const T* mask, T* out, int64_t n, const Stream& stream) {
  const char* op = "cuda::apply_dropout_mask";
  detail::check_nonnegative(n, op, "n");
  if (n == 0) return;
  detail::check_pointer(x, n, op, "x");
  detail::check_pointer(mask, n, op, "mask");
  detail::check_pointer(out, n, op, "out");
  DeviceGuard guard(stream.device);
  apply_mask_kernel<<<detail::blocks_for(n), detail::kThreadsPerBlock, 0, stream.handle>>>(
      device_pointer(x), device_pointer(mask), device_pointer(out), n);
  B3_CUDA_CHECK_LAUNCH("apply_mask_kernel");
}

}  // namespace

void draw_dropout_mask(uint64_t key, const uint64_t* key_slot, uint32_t threshold, float scale,
                       float* mask, int64_t n, const Stream& stream) {
  launch_draw_mask(key, key_slot, threshold, scale, mask, n, stream);
}
void draw_dropout_mask(uint64_t key, const uint64_t* key_slot, uint32_t threshold, float scale,
                       Half* mask, int64_t n, const Stream& stream) {
  launch_draw_mask(key, key_slot, threshold, scale, mask, n, stream);
}

void apply_dropout_mask(const float* x, const float* mask, float* out, int64_t n,
                        const Stream& stream) {
  launch_apply_mask(x, mask, out, n, stream);
}
void apply_dropout_mask(const Half* x, const Half* mask, Half* out, int64_t n,
                        const Stream& stream) {
  launch_apply_mask(x, mask, out, n, stream);
}

}  // namespace b3::cuda
