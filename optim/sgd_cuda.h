// SGD with momentum (formulas in optim/sgd.h, torch.optim.SGD's) as one fused
// CUDA kernel over every parameter.
//
// The table (optim/multi_tensor_cuda.h) has kSgdLists lists per tensor:
//   0 parameter, f32, updated in place
//   1 gradient, f32 or f16 (grad_dtype), scaled by the loss scale when a
//     scaler is given
//   2 momentum buffer, f32 (required when momentum != 0, else ignored)
//   3 an f16 copy of the parameter rewritten after the update, or null
// step: a device int64 counting the steps taken; the first step (*step == 0)
//   starts the momentum buffer from the gradient undamped, as PyTorch does;
//   incremented on the device.
// scaler: as for adam_step (optim/adam_cuda.h): gradients are divided by the
//   scale, and an inf/nan found by check_gradients_finite skips the step.
// Defined in sgd_cuda.cu.
#pragma once

#include <cstdint>

#include "optim/grad_scaler_cuda.h"
#include "optim/multi_tensor_cuda.h"
#include "tensor/cuda_stream.h"
#include "tensor/dtype.h"

namespace b3::cuda {

inline constexpr int kSgdLists = 4;

struct SgdStepOptions {
  double lr = 0.01;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

B3_CUDA_LAUNCHER(void sgd_step(const MultiTensorTable& table, DType grad_dtype,
                               const SgdStepOptions& options, int64_t* step,
                               const LossScaleState* scaler, const Stream& stream));

}  // namespace b3::cuda
