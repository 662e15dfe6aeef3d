// CUDA kernels of global average pooling (layers/pooling.h, as
// nn.AdaptiveAvgPool2d(1)) on raw device memory:
//   forward:  y[n, c] = sum over (h, w) of x[n, c, h, w] / (H*W)
//   backward: grad_x[n, c, h, w] = grad_y[n, c] / (H*W)
// x and grad_x are dense [N, C, H, W] in layout.format; y and grad_y are
// [N, C] (the [N, C, 1, 1] result, the same bytes in either format). f32 and
// f16; sums in f32, each output rounded once. Defined in pooling_cuda.cu.
#pragma once

#include "tensor/activation_layout.h"
#include "tensor/cuda_stream.h"
#include "tensor/half.h"

namespace b3::cuda {

B3_CUDA_LAUNCHER(void global_avg_pool_forward(const float* x, float* y,
                                              const ActivationLayout& layout,
                                              const Stream& stream));
B3_CUDA_LAUNCHER(void global_avg_pool_forward(const Half* x, Half* y,
                                              const ActivationLayout& layout,
                                              const Stream& stream));
B3_CUDA_LAUNCHER(void global_avg_pool_backward(const float* grad_y, float* grad_x,
                                               const ActivationLayout& layout,
                                               const Stream& stream));
B3_CUDA_LAUNCHER(void global_avg_pool_backward(const Half* grad_y, Half* grad_x,
                                               const ActivationLayout& layout,
                                               const Stream& stream));

}  // namespace b3::cuda
