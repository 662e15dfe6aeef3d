// The CUDA path of batch_norm2d (layers/batchnorm2d.h) with autograd, on the
// launchers of layers/batchnorm2d_cuda.h. batch_norm2d() calls it when the
// input lives on a CUDA device.
//
// Dtypes as torch.cuda.amp runs BatchNorm: the input (and so the output and
// the input gradient) f32 or f16; weight, bias, running_mean and running_var
// always f32 [C] on the input's device. Semantics are the CPU path's: batch
// statistics in training (running statistics blended with `momentum`, the
// variance unbiased, num_batches_tracked + 1), running statistics in
// evaluation, the same argument errors. The statistics are computed in f32
// on the device (the CPU path accumulates in double).
// Compiles in every build (never reached without CUDA).
#pragma once

#include "layers/batchnorm_activation.h"
#include "tensor/tensor.h"

namespace b3::cuda_op {

Tensor batch_norm2d(const Tensor& input, const Tensor& weight, const Tensor& bias,
                    const Tensor& running_mean, const Tensor& running_var,
                    const Tensor& num_batches_tracked, bool training, double momentum, double eps);

// batch_norm2d followed by `activation` as one op (layers/batchnorm_activation.h),
// through the fused kernels of layers/batchnorm_activation_cuda.h.
Tensor batch_norm_activation(const Tensor& input, const Tensor& weight, const Tensor& bias,
                             const Tensor& running_mean, const Tensor& running_var,
                             const Tensor& num_batches_tracked, bool training, double momentum,
                             double eps, NormActivation activation);

}  // namespace b3::cuda_op
