// Dynamic loss scaling on the device, as torch.cuda.amp.GradScaler:
//   the loss is multiplied by `scale` before backward, so small f16
//   gradients do not flush to zero;
//   check_gradients_finite: found_inf = any gradient * (1/scale) is inf/nan;
//   unscale_gradients: the same check, and every gradient *= 1/scale in
//   place (PyTorch's unscale_), recorded in gradients_unscaled;
//   the optimizer (adam_step, sgd_step) divides each gradient by the scale
//   inside its fused update unless it was unscaled already, and skips the
//   whole step when found_inf is set;
//   update_loss_scale: inf/nan -> scale *= backoff (0.5), clean-step count 0;
//   else after `growth_interval` (2000) clean steps in a row -> scale *=
//   growth (2) (only if the result is finite); gradients_unscaled is cleared.
// The state lives in device memory and every decision is made there, so a
// step never waits for the host to read found_inf (and a CUDA graph can
// capture it). Start: scale 65536, as GradScaler's init_scale.
#pragma once

#include <cstdint>

#include "optim/multi_tensor_cuda.h"
#include "tensor/cuda_stream.h"
#include "tensor/dtype.h"

namespace b3::cuda {

// The device-resident state (16 bytes; allocate it in device memory).
struct LossScaleState {
  float scale = 65536.0f;
  int32_t found_inf = 0;           // 1 when the last check saw inf/nan
  int32_t growth_tracker = 0;      // clean steps since the scale last changed
  int32_t gradients_unscaled = 0;  // 1 once unscale_gradients divided them in place
};

struct LossScaleOptions {
  float init_scale = 65536.0f;
  float growth_factor = 2.0f;
  float backoff_factor = 0.5f;
  int32_t growth_interval = 2000;
};

// Writes {init_scale, 0, 0} to the device state.
B3_CUDA_LAUNCHER(void init_loss_scale(LossScaleState* state, const LossScaleOptions& options,
                                      const Stream& stream));

// Clears found_inf, then sets it if any element of list `grad_list` of
// `table` (f32 or f16 per grad_dtype), divided by the scale, is not finite.
B3_CUDA_LAUNCHER(void check_gradients_finite(const MultiTensorTable& table, int grad_list,
                                             DType grad_dtype, LossScaleState* state,
                                             const Stream& stream));

// As check_gradients_finite, and each gradient is replaced by gradient *
// (1/scale) (f32 multiply, rounded to the gradient's dtype); sets
// gradients_unscaled, so the optimizer does not divide again.
B3_CUDA_LAUNCHER(void unscale_gradients(const MultiTensorTable& table, int grad_list,
                                        DType grad_dtype, LossScaleState* state,
                                        const Stream& stream));

// The end of a step: adjusts scale and growth_tracker from found_inf.
B3_CUDA_LAUNCHER(void update_loss_scale(LossScaleState* state, const LossScaleOptions& options,
                                        const Stream& stream));

}  // namespace b3::cuda
