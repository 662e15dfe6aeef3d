// CPU kernels of squeeze-excitation's channel scale (channel_scale in
// layers/squeeze_excite.h), with the signatures of the CUDA launchers in
// layers/squeeze_excite_cuda.h:
//   forward:  out[n, c, h, w] = x[n, c, h, w] * scale[n, c]
//   backward: grad_x[n, c, h, w] = grad_out[n, c, h, w] * scale[n, c]
//             grad_scale[n, c]   = sum over (h, w) of grad_out * x
// x, out, grad_out and grad_x are dense [N, C, H, W] in layout.format; scale
// and grad_scale are the dense [N, C] block. f32 and f64; the sums run in
// double, in an order that depends only on the shape. In NHWC with both
// gradients wanted, one pass over grad_out computes both.
// Instantiated for float and double in squeeze_excite_cpu.cpp.
#pragma once

#include "tensor/activation_layout.h"

namespace b3::cpu {

template <typename T>
void channel_scale_forward(const T* x, const T* scale, T* out, const ActivationLayout& layout);

// Either gradient pointer may be null to skip it; x is read only for
// grad_scale and scale only for grad_x (the other may then be null).
template <typename T>
void channel_scale_backward(const T* x, const T* scale, const T* grad_out, T* grad_x, T* grad_scale,
                            const ActivationLayout& layout);

}  // namespace b3::cpu
