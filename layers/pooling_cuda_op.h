// The CUDA path of global average pooling (adaptive_avg_pool2d with output
// size 1, layers/pooling.h) with autograd, on the launchers of
// layers/pooling_cuda.h. adaptive_avg_pool2d() calls it, after its shape
// checks, when the input lives on a CUDA device. f32 or f16; the output is
// [N, C, 1, 1] in the input's dtype (the same bytes in either memory format).
// Compiles in every build (never reached without CUDA).
#pragma once

#include "tensor/tensor.h"

namespace b3::cuda_op {

// input: 4-D [N, C, H, W] on a CUDA device with H, W > 0 (checked by the caller).
Tensor global_avg_pool2d(const Tensor& input);

}  // namespace b3::cuda_op
