// Autocast: mixed precision as torch.autocast("cuda", dtype=torch.float16).
//
// Inside an AutocastGuard, ops that gain from f16 Tensor Cores (conv2d and
// linear) cast their floating inputs, weights and biases on a CUDA device to
// f16 with a recorded cast (its backward converts the gradient back, so f32
// master weights receive f32 gradients), and run in f16 with f32
// accumulation. Every other op follows its input's dtype: BatchNorm takes f16
// activations with f32 parameters and statistics, activations, pooling and
// the squeeze-excitation scale stay f16, and cross_entropy computes its loss
// in f32 from f16 logits. CPU tensors are never cast: the CPU has no f16
// kernels, so autocast is a no-op there, as torch.autocast("cuda") is for
// CPU tensors.
//
// The mode is thread_local like grad mode (autograd/grad_mode.h), and for the
// same reason: threading a precision flag through every op call would bury
// the math. It is scoped by the guard and never shared across threads.
#pragma once

#include <optional>

#include "tensor/tensor.h"

namespace b3 {

// The dtype ops cast to inside the innermost AutocastGuard, or none.
std::optional<DType> autocast_dtype();

// While alive, conv2d and linear run CUDA inputs in `dtype` (f16).
class AutocastGuard {
 public:
  explicit AutocastGuard(DType dtype = DType::f16);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  std::optional<DType> previous_;
};

// `t` cast to the autocast dtype (recorded by autograd) when autocast is on,
// t is defined, on a CUDA device and of another floating dtype; else t itself.
Tensor autocast_cast(const Tensor& t);

}  // namespace b3
