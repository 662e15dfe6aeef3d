// The dropout mask multiply of layers/dropout_cuda.h: one grid-stride loop,
// f16 loaded into f32 registers and rounded once on the way out.
#include "layers/dropout_cuda.h"

#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cuda_kernels.cuh"

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

void apply_dropout_mask(const float* x, const float* mask, float* out, int64_t n,
                        const Stream& stream) {
  launch_apply_mask(x, mask, out, n, stream);
}
void apply_dropout_mask(const Half* x, const Half* mask, Half* out, int64_t n,
                        const Stream& stream) {
  launch_apply_mask(x, mask, out, n, stream);
}

}  // namespace b3::cuda
