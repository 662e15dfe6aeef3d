// CPU kernels of the pointwise activations over n contiguous elements
// (templated on float/double; the loops vectorize).
#pragma once

#include <cstdint>

namespace b3::cpu {

template <typename T>
void relu_forward(const T* x, T* y, int64_t n) {
#pragma omp parallel for simd if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] > T(0) ? x[i] : T(0);
}

template <typename T>
void relu_backward(const T* x, const T* gy, T* gx, int64_t n) {
#pragma omp parallel for simd if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) gx[i] = x[i] > T(0) ? gy[i] : T(0);
}

template <typename T>
void hardsigmoid_forward(const T* x, T* y, int64_t n) {
#pragma omp parallel for simd if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    const T r6 = x[i] + T(3) < T(0) ? T(0) : (x[i] + T(3) > T(6) ? T(6) : x[i] + T(3));
    y[i] = r6 / T(6);
  }
}

template <typename T>
void hardsigmoid_backward(const T* x, const T* gy, T* gx, int64_t n) {
#pragma omp parallel for simd if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) gx[i] = (x[i] > T(-3) && x[i] < T(3)) ? gy[i] / T(6) : T(0);
}

template <typename T>
void hardswish_forward(const T* x, T* y, int64_t n) {
#pragma omp parallel for simd if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    const T r6 = x[i] + T(3) < T(0) ? T(0) : (x[i] + T(3) > T(6) ? T(6) : x[i] + T(3));
    y[i] = x[i] * r6 / T(6);
  }
}

template <typename T>
void hardswish_backward(const T* x, const T* gy, T* gx, int64_t n) {
#pragma omp parallel for simd if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    const T slope = x[i] < T(-3) ? T(0) : (x[i] > T(3) ? T(1) : x[i] / T(3) + T(0.5));
    gx[i] = gy[i] * slope;
  }
}

}  // namespace b3::cpu
