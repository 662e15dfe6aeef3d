// BatchNorm2d followed by an activation (none, ReLU or Hardswish) as ONE op:
//   batch_norm_activation(x, ..., relu) == relu(batch_norm2d(x, ...))
// with exactly the semantics of the two ops in sequence (layers/batchnorm2d.h,
// layers/activations.h): the same output, gradients w.r.t. input, weight and
// bias, running statistics and num_batches_tracked.
//
// Why: on the CPU the BatchNorm and activation passes run at the memory's
// bandwidth (docs/cpu_profile.md), so fewer passes is the only way to make
// them faster. Fused, the forward normalizes and activates in one pass (one
// read of x, one write of act(y)) and never stores the BatchNorm output y;
// the backward takes g = dL/d act(y), recomputes y = (x - mean) * invstd *
// weight + bias from the saved x on the fly and applies act'(y) inside
// BatchNorm's two backward passes: no activation backward pass, no stored y.
// Per element and step that is 3 memory passes fewer than the sequence
// (forward: y written and read again; backward: dL/dy written and read again).
//
// CPU: f32 and f64, NCHW and NHWC (the output keeps the input's format); the
// kernels are BatchNorm's own (layers/batchnorm2d_cpu.h), templated on the
// activation. CUDA: f32 or f16 activations with f32 statistics, through the
// fused kernels of layers/batchnorm_activation_cuda.h (one output pass; the
// backward recomputes y from x and needs no stored y either).
#pragma once

#include "layers/batchnorm2d_cpu.h"
#include "tensor/tensor.h"

namespace b3 {

// none, relu or hardswish (PyTorch's definitions, layers/activations.h).
using NormActivation = cpu::BatchNormActivation;

// "none", "relu" or "hardswish".
const char* norm_activation_name(NormActivation activation);

// The arguments are batch_norm2d's (layers/batchnorm2d.h), then the activation:
// activation(batch_norm2d(input, weight, bias, running_mean, running_var,
//                         num_batches_tracked, training, momentum, eps)).
Tensor batch_norm_activation(const Tensor& input, const Tensor& weight, const Tensor& bias,
                             const Tensor& running_mean, const Tensor& running_var,
                             const Tensor& num_batches_tracked, bool training, double momentum,
                             double eps, NormActivation activation);

}  // namespace b3
