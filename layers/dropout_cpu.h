// The CPU kernel of dropout (layers/dropout.h), with the signature of the
// CUDA launcher in layers/dropout_cuda.h: out[i] = x[i] * mask[i] over n
// elements of identically laid out x and mask ({0, 1/(1-p)}), for the
// forward (y = x * m) and the backward (dL/dx = g * m). f32 and f64; out may
// alias x (in place).
#pragma once

#include <cstdint>

namespace b3::cpu {

template <typename T>
void apply_dropout_mask(const T* x, const T* mask, T* out, int64_t n) {
#pragma omp parallel for simd if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * mask[i];
}

}  // namespace b3::cpu
