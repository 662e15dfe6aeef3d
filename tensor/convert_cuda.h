// Element-wise CUDA kernels on raw device pointers: f32 <-> f16 casts, fill,
// add and scale. Each takes n elements (n >= 0; n == 0 launches nothing) and
// the Stream to queue on; f16 values are computed in f32 and rounded once to
// nearest even. Outputs may alias inputs element for element (in place).
// Declared for every build; defined in tensor/convert_cuda.cu (CUDA builds).
#pragma once

#include <cstdint>

#include "tensor/cuda_stream.h"
#include "tensor/half.h"

namespace b3::cuda {

// dst[i] = src[i] converted (f32 -> f16: round to nearest even; beyond 65504
// becomes inf; inf and nan stay; f16 -> f32 is exact).
B3_CUDA_LAUNCHER(void convert(const float* src, Half* dst, int64_t n, const Stream& stream));
B3_CUDA_LAUNCHER(void convert(const Half* src, float* dst, int64_t n, const Stream& stream));

// dst[i] = value (rounded to f16 for a Half destination).
B3_CUDA_LAUNCHER(void fill(float* dst, int64_t n, float value, const Stream& stream));
B3_CUDA_LAUNCHER(void fill(Half* dst, int64_t n, float value, const Stream& stream));

// out[i] = a[i] + alpha * b[i]  (torch.add(a, b, alpha=alpha)).
B3_CUDA_LAUNCHER(void add(const float* a, const float* b, float alpha, float* out, int64_t n,
                          const Stream& stream));
B3_CUDA_LAUNCHER(void add(const Half* a, const Half* b, float alpha, Half* out, int64_t n,
                          const Stream& stream));

// out[i] = factor * x[i].
B3_CUDA_LAUNCHER(void scale(const float* x, float factor, float* out, int64_t n,
                            const Stream& stream));
B3_CUDA_LAUNCHER(void scale(const Half* x, float factor, Half* out, int64_t n,
                            const Stream& stream));

}  // namespace b3::cuda
