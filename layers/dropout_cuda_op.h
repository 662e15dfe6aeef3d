// dropout on a CUDA tensor (the Tensor-level path of layers/dropout.h): the
// mask, drawn on the host by dropout() exactly as for a CPU input, is
// uploaded in the input's dtype and layout and multiplied in on the device
// (layers/dropout_cuda.h); the autograd node keeps the device mask. Compiles
// in every build; without the CUDA backend no CUDA tensor exists, so it is
// never reached there.
#pragma once

#include "tensor/tensor.h"

namespace b3::cuda_op {

// input (f32 or f16, on a CUDA device) times `logical_mask`, a CPU tensor of
// the input's shape holding {0, 1/(1-p)} in logical (row-major) order. The
// output keeps the input's layout.
Tensor dropout(const Tensor& input, const Tensor& logical_mask);

}  // namespace b3::cuda_op
