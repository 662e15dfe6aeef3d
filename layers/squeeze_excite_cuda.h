// CUDA kernels of squeeze-excitation's channel scale (channel_scale in
// layers/squeeze_excite.h) on raw device memory:
//   forward:  out[n, c, h, w] = x[n, c, h, w] * scale[n, c]
//   backward: grad_x[n, c, h, w] = grad_out[n, c, h, w] * scale[n, c]
//             grad_scale[n, c]   = sum over (h, w) of grad_out * x
// x, out, grad_out and grad_x are dense [N, C, H, W] in layout.format; scale
// and grad_scale are [N, C] (the [N, C, 1, 1] tensor). f32 and f16; sums in
// f32, each output rounded once. (The rest of squeeze-excitation is pooling,
// 1x1 convolutions and activations, which have their own kernels.)
// Defined in squeeze_excite_cuda.cu.
#pragma once

#include "tensor/activation_layout.h"
#include "tensor/cuda_stream.h"
#include "tensor/half.h"

namespace b3::cuda {

B3_CUDA_LAUNCHER(void channel_scale_forward(const float* x, const float* scale, float* out,
                                            const ActivationLayout& layout, const Stream& stream));
B3_CUDA_LAUNCHER(void channel_scale_forward(const Half* x, const Half* scale, Half* out,
                                            const ActivationLayout& layout, const Stream& stream));
// Either gradient pointer may be null to skip it.
B3_CUDA_LAUNCHER(void channel_scale_backward(const float* x, const float* scale,
                                             const float* grad_out, float* grad_x,
                                             float* grad_scale, const ActivationLayout& layout,
                                             const Stream& stream));
B3_CUDA_LAUNCHER(void channel_scale_backward(const Half* x, const Half* scale, const Half* grad_out,
                                             Half* grad_x, Half* grad_scale,
                                             const ActivationLayout& layout, const Stream& stream));

}  // namespace b3::cuda
