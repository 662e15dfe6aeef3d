// batch_norm_activation: the CPU path is batch_norm2d's own implementation with
// the activation applied in its passes (cpu::batch_norm_with_activation in
// batchnorm2d.cpp, which shares the argument checks, statistics, running-stat
// update and autograd node with batch_norm2d); a CUDA input runs the fused
// CUDA kernels (layers/batchnorm2d_cuda_op.h).
#include "layers/batchnorm_activation.h"

#include "layers/batchnorm2d.h"
#include "layers/batchnorm2d_cuda_op.h"

namespace b3 {

const char* norm_activation_name(NormActivation activation) {
  switch (activation) {
    case NormActivation::none: return "none";
    case NormActivation::relu: return "relu";
    case NormActivation::hardswish: return "hardswish";
  }
  return "activation";
}

Tensor batch_norm_activation(const Tensor& input, const Tensor& weight, const Tensor& bias,
                             const Tensor& running_mean, const Tensor& running_var,
                             const Tensor& num_batches_tracked, bool training, double momentum,
                             double eps, NormActivation activation) {
  if (input.defined() && input.device().is_cuda()) {
    return cuda_op::batch_norm_activation(input, weight, bias, running_mean, running_var,
                                          num_batches_tracked, training, momentum, eps, activation);
  }
  return cpu::batch_norm_with_activation(input, weight, bias, running_mean, running_var,
                                         num_batches_tracked, training, momentum, eps, activation);
}

}  // namespace b3
