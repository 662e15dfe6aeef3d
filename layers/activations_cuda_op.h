// The CUDA paths of relu, hardsigmoid and hardswish (layers/activations.h):
// Tensor in, Tensor out, with autograd, on the launchers of
// layers/activations_cuda.h. relu() and friends call these when their input
// lives on a CUDA device. f32 or f16 (an f16 input gives an f16 output and
// f16 gradients: activations follow their input's dtype under autocast).
// Compiles in every build; in a CPU-only build no CUDA tensor can exist, so
// these are never reached there.
#pragma once

#include "tensor/tensor.h"

namespace b3::cuda_op {

Tensor relu(const Tensor& x);
Tensor hardsigmoid(const Tensor& x);
Tensor hardswish(const Tensor& x);

}  // namespace b3::cuda_op
