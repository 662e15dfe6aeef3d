// CPU kernels of the pointwise activations over n contiguous elements
// (templated on float/double; map_elements vectorizes them, splits them
// between threads and streams large outputs, see elementwise_cpu.h).
// Each formula is written once and evaluated on scalars and on vectors.
#pragma once

#include <cstdint>

#include "tensor/elementwise_cpu.h"

namespace b3::cpu {

template <typename T>
void relu_forward(const T* x, T* y, int64_t n) {
  map_elements(
      n, y, 0, [](auto v) { return v > 0 ? v : 0; }, x);
}

// x may be ReLU's input or its output: both are > 0 at the same places.
template <typename T>
void relu_backward(const T* x, const T* gy, T* gx, int64_t n) {
  map_elements(
      n, gx, 0, [](auto v, auto g) { return v > 0 ? g : 0; }, x, gy);
}

// relu6(x + 3) = clamp(x + 3, 0, 6)
template <typename V>
inline V relu6_of_x_plus_3(V x) {
  const V shifted = x + 3;
  return shifted < 0 ? 0 : (shifted > 6 ? 6 : shifted);
}

template <typename T>
void hardsigmoid_forward(const T* x, T* y, int64_t n) {
  map_elements(
      n, y, 0, [](auto v) { return relu6_of_x_plus_3(v) / 6; }, x);
}

template <typename T>
void hardsigmoid_backward(const T* x, const T* gy, T* gx, int64_t n) {
  map_elements(
      n, gx, 0, [](auto v, auto g) { return v > -3 && v < 3 ? g / 6 : 0; }, x, gy);
}

template <typename T>
void hardswish_forward(const T* x, T* y, int64_t n) {
  map_elements(
      n, y, 0, [](auto v) { return v * relu6_of_x_plus_3(v) / 6; }, x);
}

template <typename T>
void hardswish_backward(const T* x, const T* gy, T* gx, int64_t n) {
  map_elements(
      n, gx, 0,
      [](auto v, auto g) {
        // 0.5f is exact in float and double, and keeps a float scalar in float.
        const decltype(v) slope = v < -3 ? 0 : (v > 3 ? 1 : v / 3 + 0.5f);
        return g * slope;
      },
      x, gy);
}

}  // namespace b3::cpu
