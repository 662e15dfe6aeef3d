// cross_entropy on CUDA logits (the Tensor-level path of layers/loss.h),
// through the kernels of layers/loss_cuda.h, with its autograd node. Compiles
// in every build; without the CUDA backend no CUDA tensor exists, so it is
// never reached there.
#pragma once

#include "tensor/tensor.h"

namespace b3::cuda_op {

// Mean cross-entropy of logits [N, K] (f32 or f16) against target [N] (i64 or
// i32) on the same CUDA device; cross_entropy() has checked the shapes and,
// for targets that came from the CPU, their range. Returns an f32 tensor of
// shape [] on the device (computed in f32 from f16 logits, as autocast does);
// the logits gradient has the logits' dtype. Never waits for the device: the
// backward reads the upstream gradient (e.g. a loss scale) from device memory.
Tensor cross_entropy(const Tensor& logits, const Tensor& target);

}  // namespace b3::cuda_op
