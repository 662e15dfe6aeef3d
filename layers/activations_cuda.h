// CUDA kernels of the pointwise activations (definitions and derivatives as
// in layers/activations.h, PyTorch's), over n contiguous elements of raw
// device memory, so any layout works as long as x, y and the gradients share
// it. f32 and f16; f16 is loaded into f32, computed there, rounded once.
// Backward takes the forward's INPUT x, as the CPU kernels do. Outputs may
// alias their inputs (in place). Defined in activations_cuda.cu (CUDA builds).
#pragma once

#include <cstdint>

#include "tensor/cuda_stream.h"
#include "tensor/half.h"

namespace b3::cuda {

// y = max(x, 0);  grad_x = grad_y for x > 0, else 0.
B3_CUDA_LAUNCHER(void relu_forward(const float* x, float* y, int64_t n, const Stream& stream));
B3_CUDA_LAUNCHER(void relu_forward(const Half* x, Half* y, int64_t n, const Stream& stream));
B3_CUDA_LAUNCHER(void relu_backward(const float* x, const float* grad_y, float* grad_x, int64_t n,
                                    const Stream& stream));
B3_CUDA_LAUNCHER(void relu_backward(const Half* x, const Half* grad_y, Half* grad_x, int64_t n,
                                    const Stream& stream));

// y = relu6(x + 3) / 6;  grad_x = grad_y / 6 for -3 < x < 3, else 0.
B3_CUDA_LAUNCHER(void hardsigmoid_forward(const float* x, float* y, int64_t n,
                                          const Stream& stream));
B3_CUDA_LAUNCHER(void hardsigmoid_forward(const Half* x, Half* y, int64_t n, const Stream& stream));
B3_CUDA_LAUNCHER(void hardsigmoid_backward(const float* x, const float* grad_y, float* grad_x,
                                           int64_t n, const Stream& stream));
B3_CUDA_LAUNCHER(void hardsigmoid_backward(const Half* x, const Half* grad_y, Half* grad_x,
                                           int64_t n, const Stream& stream));

// y = x * relu6(x + 3) / 6;  grad_x = grad_y * (0 for x < -3, x / 3 + 1/2 for
// -3 <= x <= 3, 1 for x > 3).
B3_CUDA_LAUNCHER(void hardswish_forward(const float* x, float* y, int64_t n, const Stream& stream));
B3_CUDA_LAUNCHER(void hardswish_forward(const Half* x, Half* y, int64_t n, const Stream& stream));
B3_CUDA_LAUNCHER(void hardswish_backward(const float* x, const float* grad_y, float* grad_x,
                                         int64_t n, const Stream& stream));
B3_CUDA_LAUNCHER(void hardswish_backward(const Half* x, const Half* grad_y, Half* grad_x, int64_t n,
                                         const Stream& stream));

}  // namespace b3::cuda
