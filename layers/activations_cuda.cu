// The pointwise activation kernels of layers/activations_cuda.h: one
// grid-stride loop per direction, the math of layers/activations_cpu.h
// written for f32 registers.
#include "layers/activations_cuda.h"

#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cuda_kernels.cuh"

namespace b3::cuda {

namespace {

using detail::device_pointer;
using detail::from_float;
using detail::to_float;

struct Relu {
  __device__ static float forward(float x) { return x > 0.0f ? x : 0.0f; }
  __device__ static float backward(float x, float g) { return x > 0.0f ? g : 0.0f; }
};

struct Hardsigmoid {
  __device__ static float forward(float x) { return fminf(fmaxf(x + 3.0f, 0.0f), 6.0f) / 6.0f; }
  __device__ static float backward(float x, float g) {
    return (x > -3.0f && x < 3.0f) ? g / 6.0f : 0.0f;
  }
};

struct Hardswish {
  __device__ static float forward(float x) { return x * fminf(fmaxf(x + 3.0f, 0.0f), 6.0f) / 6.0f; }
  __device__ static float backward(float x, float g) {
    const float slope = x < -3.0f ? 0.0f : (x > 3.0f ? 1.0f : x / 3.0f + 0.5f);
    return g * slope;
  }
};

// No __restrict__: y may alias x (in place).
template <typename Op, typename T>
__global__ void forward_kernel(const T* x, T* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    y[i] = from_float<T>(Op::forward(to_float(x[i])));
  }
}

template <typename Op, typename T>
__global__ void backward_kernel(const T* x, const T* grad_y, T* grad_x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    grad_x[i] = from_float<T>(Op::backward(to_float(x[i]), to_float(grad_y[i])));
  }
}

template <typename Op, typename T>
void launch_forward(const char* op, const T* x, T* y, int64_t n, const Stream& stream) {
  detail::check_nonnegative(n, op, "n");
  if (n == 0) return;
  detail::check_pointer(x, n, op, "x");
  detail::check_pointer(y, n, op, "y");
  DeviceGuard guard(stream.device);
  forward_kernel<Op><<<detail::blocks_for(n), detail::kThreadsPerBlock, 0, stream.handle>>>(
      device_pointer(x), device_pointer(y), n);
  B3_CUDA_CHECK_LAUNCH("activation forward_kernel");
}

template <typename Op, typename T>
void launch_backward(const char* op, const T* x, const T* grad_y, T* grad_x, int64_t n,
                     const Stream& stream) {
  detail::check_nonnegative(n, op, "n");
  if (n == 0) return;
  detail::check_pointer(x, n, op, "x");
  detail::check_pointer(grad_y, n, op, "grad_y");
  detail::check_pointer(grad_x, n, op, "grad_x");
  DeviceGuard guard(stream.device);
  backward_kernel<Op><<<detail::blocks_for(n), detail::kThreadsPerBlock, 0, stream.handle>>>(
      device_pointer(x), device_pointer(grad_y), device_pointer(grad_x), n);
  B3_CUDA_CHECK_LAUNCH("activation backward_kernel");
}

}  // namespace

void relu_forward(const float* x, float* y, int64_t n, const Stream& stream) {
  launch_forward<Relu>("cuda::relu_forward", x, y, n, stream);
}
void relu_forward(const Half* x, Half* y, int64_t n, const Stream& stream) {
  launch_forward<Relu>("cuda::relu_forward", x, y, n, stream);
}
void relu_backward(const float* x, const float* grad_y, float* grad_x, int64_t n,
                   const Stream& stream) {
  launch_backward<Relu>("cuda::relu_backward", x, grad_y, grad_x, n, stream);
}
void relu_backward(const Half* x, const Half* grad_y, Half* grad_x, int64_t n,
                   const Stream& stream) {
  launch_backward<Relu>("cuda::relu_backward", x, grad_y, grad_x, n, stream);
}

void hardsigmoid_forward(const float* x, float* y, int64_t n, const Stream& stream) {
  launch_forward<Hardsigmoid>("cuda::hardsigmoid_forward", x, y, n, stream);
}
void hardsigmoid_forward(const Half* x, Half* y, int64_t n, const Stream& stream) {
  launch_forward<Hardsigmoid>("cuda::hardsigmoid_forward", x, y, n, stream);
}
void hardsigmoid_backward(const float* x, const float* grad_y, float* grad_x, int64_t n,
                          const Stream& stream) {
  launch_backward<Hardsigmoid>("cuda::hardsigmoid_backward", x, grad_y, grad_x, n, stream);
}
void hardsigmoid_backward(const Half* x, const Half* grad_y, Half* grad_x, int64_t n,
                          const Stream& stream) {
  launch_backward<Hardsigmoid>("cuda::hardsigmoid_backward", x, grad_y, grad_x, n, stream);
}

void hardswish_forward(const float* x, float* y, int64_t n, const Stream& stream) {
  launch_forward<Hardswish>("cuda::hardswish_forward", x, y, n, stream);
}
void hardswish_forward(const Half* x, Half* y, int64_t n, const Stream& stream) {
  launch_forward<Hardswish>("cuda::hardswish_forward", x, y, n, stream);
}
void hardswish_backward(const float* x, const float* grad_y, float* grad_x, int64_t n,
                        const Stream& stream) {
  launch_backward<Hardswish>("cuda::hardswish_backward", x, grad_y, grad_x, n, stream);
}
void hardswish_backward(const Half* x, const Half* grad_y, Half* grad_x, int64_t n,
                        const Stream& stream) {
  launch_backward<Hardswish>("cuda::hardswish_backward", x, grad_y, grad_x, n, stream);
}

}  // namespace b3::cuda
