// The element-wise kernels of tensor/convert_cuda.h: one grid-stride loop
// each, f16 loaded into f32 registers and rounded once on the way out.
#include "tensor/convert_cuda.h"

#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cuda_kernels.cuh"

namespace b3::cuda {

namespace {

using detail::device_pointer;
using detail::device_t;
using detail::from_float;
using detail::to_float;

template <typename Src, typename Dst>
__global__ void convert_kernel(const Src* __restrict__ src, Dst* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    dst[i] = from_float<Dst>(to_float(src[i]));
  }
}

template <typename T>
__global__ void fill_kernel(T* __restrict__ dst, int64_t n, float value) {
  const T v = from_float<T>(value);
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    dst[i] = v;
  }
}

// No __restrict__: out may alias a or b (each element is read before it is written).
template <typename T>
__global__ void add_kernel(const T* a, const T* b, float alpha, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = from_float<T>(to_float(a[i]) + alpha * to_float(b[i]));
  }
}

template <typename T>
__global__ void scale_kernel(const T* x, float factor, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = from_float<T>(factor * to_float(x[i]));
  }
}

template <typename Src, typename Dst>
void launch_convert(const Src* src, Dst* dst, int64_t n, const Stream& stream) {
  detail::check_nonnegative(n, "cuda::convert", "n");
  if (n == 0) return;
  detail::check_pointer(src, n, "cuda::convert", "src");
  detail::check_pointer(dst, n, "cuda::convert", "dst");
  DeviceGuard guard(stream.device);
  convert_kernel<<<detail::blocks_for(n), detail::kThreadsPerBlock, 0, stream.handle>>>(
      device_pointer(src), device_pointer(dst), n);
  B3_CUDA_CHECK_LAUNCH("convert_kernel");
}

template <typename T>
void launch_fill(T* dst, int64_t n, float value, const Stream& stream) {
  detail::check_nonnegative(n, "cuda::fill", "n");
  if (n == 0) return;
  detail::check_pointer(dst, n, "cuda::fill", "dst");
  DeviceGuard guard(stream.device);
  fill_kernel<<<detail::blocks_for(n), detail::kThreadsPerBlock, 0, stream.handle>>>(
      device_pointer(dst), n, value);
  B3_CUDA_CHECK_LAUNCH("fill_kernel");
}

template <typename T>
void launch_add(const T* a, const T* b, float alpha, T* out, int64_t n, const Stream& stream) {
  detail::check_nonnegative(n, "cuda::add", "n");
  if (n == 0) return;
  detail::check_pointer(a, n, "cuda::add", "a");
  detail::check_pointer(b, n, "cuda::add", "b");
  detail::check_pointer(out, n, "cuda::add", "out");
  DeviceGuard guard(stream.device);
  add_kernel<<<detail::blocks_for(n), detail::kThreadsPerBlock, 0, stream.handle>>>(
      device_pointer(a), device_pointer(b), alpha, device_pointer(out), n);
  B3_CUDA_CHECK_LAUNCH("add_kernel");
}

template <typename T>
void launch_scale(const T* x, float factor, T* out, int64_t n, const Stream& stream) {
  detail::check_nonnegative(n, "cuda::scale", "n");
  if (n == 0) return;
  detail::check_pointer(x, n, "cuda::scale", "x");
  detail::check_pointer(out, n, "cuda::scale", "out");
  DeviceGuard guard(stream.device);
  scale_kernel<<<detail::blocks_for(n), detail::kThreadsPerBlock, 0, stream.handle>>>(
      device_pointer(x), factor, device_pointer(out), n);
  B3_CUDA_CHECK_LAUNCH("scale_kernel");
}

}  // namespace

void convert(const float* src, Half* dst, int64_t n, const Stream& stream) {
  launch_convert(src, dst, n, stream);
}
void convert(const Half* src, float* dst, int64_t n, const Stream& stream) {
  launch_convert(src, dst, n, stream);
}
void fill(float* dst, int64_t n, float value, const Stream& stream) {
  launch_fill(dst, n, value, stream);
}
void fill(Half* dst, int64_t n, float value, const Stream& stream) {
  launch_fill(dst, n, value, stream);
}
void add(const float* a, const float* b, float alpha, float* out, int64_t n, const Stream& stream) {
  launch_add(a, b, alpha, out, n, stream);
}
void add(const Half* a, const Half* b, float alpha, Half* out, int64_t n, const Stream& stream) {
  launch_add(a, b, alpha, out, n, stream);
}
void scale(const float* x, float factor, float* out, int64_t n, const Stream& stream) {
  launch_scale(x, factor, out, n, stream);
}
void scale(const Half* x, float factor, Half* out, int64_t n, const Stream& stream) {
  launch_scale(x, factor, out, n, stream);
}

}  // namespace b3::cuda
