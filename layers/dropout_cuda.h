// The element-wise kernel of dropout on CUDA (layers/dropout.h): multiplies a
// tensor by its scaled mask {0, 1/(1-p)}, both laid out identically, for the
// forward (y = x * m) and the backward (dL/dx = g * m). f16 values are
// multiplied in f32 and rounded once to nearest even; f32 is one IEEE
// multiply, so a CUDA run matches the CPU's bit for bit. n >= 0 (0 launches
// nothing); out may alias x element for element (in place).
// Declared for every build; defined in layers/dropout_cuda.cu (CUDA builds).
#pragma once

#include <cstdint>

#include "tensor/cuda_stream.h"
#include "tensor/half.h"

namespace b3::cuda {

// out[i] = x[i] * mask[i]
B3_CUDA_LAUNCHER(void apply_dropout_mask(const float* x, const float* mask, float* out, int64_t n,
                                         const Stream& stream));
B3_CUDA_LAUNCHER(void apply_dropout_mask(const Half* x, const Half* mask, Half* out, int64_t n,
                                         const Stream& stream));

}  // namespace b3::cuda
