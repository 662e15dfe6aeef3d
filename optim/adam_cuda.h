// Adam and AdamW (formulas in optim/adam.h, torch.optim's) as one fused CUDA
// kernel over every parameter: one launch per step, whatever the number of
// parameter tensors.
//
// The table (optim/multi_tensor_cuda.h) has kAdamLists lists per tensor:
//   0 parameter, f32 (the master weights), updated in place
//   1 gradient, f32 or f16 (grad_dtype), as backward left it (scaled by the
//     loss scale when a scaler is given)
//   2 exp_avg (m), f32        3 exp_avg_sq (v), f32
//   4 an f16 copy of the parameter, rewritten after the update (the weights
//     the f16 forward uses), or null for tensors without one
// step: a device int64, the number of steps taken so far; this step uses
//   t = *step + 1 for the bias corrections and increments *step on the device.
// scaler: the loss scaler's device state, or null. With it, each gradient is
//   divided by the scale inside the update, and when check_gradients_finite
//   (optim/grad_scaler_cuda.h, queued before on the same stream) found inf or
//   nan, the whole step is skipped on the device: parameters, moments, copies
//   and *step stay as they were.
// Nothing here waits for the host. Defined in adam_cuda.cu.
#pragma once

#include <cstdint>

#include "optim/grad_scaler_cuda.h"
#include "optim/multi_tensor_cuda.h"
#include "tensor/cuda_stream.h"
#include "tensor/dtype.h"

namespace b3::cuda {

inline constexpr int kAdamLists = 5;

struct AdamStepOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool decoupled_weight_decay = false;  // true: AdamW
};

B3_CUDA_LAUNCHER(void adam_step(const MultiTensorTable& table, DType grad_dtype,
                                const AdamStepOptions& options, int64_t* step,
                                const LossScaleState* scaler, const Stream& stream));

}  // namespace b3::cuda
