// CPU kernels of global average pooling (layers/pooling.h, as
// nn.AdaptiveAvgPool2d(1)), with the signatures of the CUDA launchers in
// layers/pooling_cuda.h:
//   forward:  y[n, c] = sum over (h, w) of x[n, c, h, w] / (H*W)
//   backward: grad_x[n, c, h, w] = grad_y[n, c] / (H*W)
// x and grad_x are dense [N, C, H, W] in layout.format; y and grad_y are the
// dense [N, C] block (the [N, C, 1, 1] result). f32 and f64; the forward
// sums in double, in an order that depends only on the shape.
// Instantiated for float and double in pooling_cpu.cpp.
#pragma once

#include "tensor/activation_layout.h"

namespace b3::cpu {

template <typename T>
void global_avg_pool_forward(const T* x, T* y, const ActivationLayout& layout);

template <typename T>
void global_avg_pool_backward(const T* grad_y, T* grad_x, const ActivationLayout& layout);

}  // namespace b3::cpu
