// linear on CUDA tensors (the Tensor-level path of layers/linear.h): dense
// row-major data to cuBLAS through the launchers of layers/linear_cuda.h, and
// the autograd node whose backward runs the three backward GEMMs and the bias
// column sums. Compiles in every build; without the CUDA backend no CUDA
// tensor exists, so it is never reached there.
#pragma once

#include "tensor/tensor.h"

namespace b3::cuda_op {

// x W^T + b for tensors on one CUDA device, all f32 or all f16 (linear() has
// already applied autocast and checked the shapes); `bias` may be undefined.
Tensor linear(const Tensor& input, const Tensor& weight, const Tensor& bias);

}  // namespace b3::cuda_op
