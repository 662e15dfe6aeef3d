// The CUDA path of squeeze-excitation's channel scale (channel_scale in
// layers/squeeze_excite.h) with autograd, on the launchers of
// layers/squeeze_excite_cuda.h. channel_scale() calls it, after its shape
// and dtype checks, when x lives on a CUDA device. f32 or f16 (x and scale of
// one dtype); the output keeps x's memory format.
// Compiles in every build (never reached without CUDA).
#pragma once

#include "tensor/tensor.h"

namespace b3::cuda_op {

// out[n, c, h, w] = x[n, c, h, w] * scale[n, c, 0, 0]; x [N, C, H, W],
// scale [N, C, 1, 1] (shapes and dtypes checked by the caller).
Tensor channel_scale(const Tensor& x, const Tensor& scale);

}  // namespace b3::cuda_op
