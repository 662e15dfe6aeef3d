// CPU kernels of Linear (layers/linear.h), shaped like the cuBLAS launchers
// of layers/linear_cuda.h: raw pointers to dense row-major data described by
// a LinearGeometry, f32 or f64 (T):
//   forward:  y = x W^T (+ bias, when not null)
//   backward: grad_x = g W, grad_weight = g^T x, grad_bias = column sums of g
// Any of grad_x, grad_weight, grad_bias may be null to skip it; x is read only
// for grad_weight and weight only for grad_x. Outputs are overwritten.
// Instantiated for float and double in linear_cpu.cpp (f32 on gemm_cpu.h's
// AVX-512 kernels where compiled in, otherwise and for f64 Eigen's GEMMs;
// both parallel with OpenMP, neither dependent on the thread count).
#pragma once

#include "layers/linear.h"

namespace b3::cpu {

template <typename T>
void linear_forward(const LinearGeometry& geometry, const T* x, const T* weight, const T* bias,
                    T* y);

template <typename T>
void linear_backward(const LinearGeometry& geometry, const T* x, const T* weight, const T* grad_y,
                     T* grad_x, T* grad_weight, T* grad_bias);

}  // namespace b3::cpu
