// GradScaler: dynamic loss scaling for f16 mixed precision on a CUDA device,
// as torch.cuda.amp.GradScaler. One training step with it:
//
//   optimizer.zero_grad();
//   { AutocastGuard autocast;  logits = model(x);  loss = cross_entropy(logits, y); }
//   loss.backward(scaler.scale_seed());   // gradients of (loss * scale)
//   scaler.unscale_(optimizer);           // optional: .grad now holds true gradients
//   clip_or_inspect(gradients);           //   (clipping, norms), as in PyTorch
//   scaler.step(optimizer);               // unscales (unless done) and steps; skips on inf/nan
//   scaler.update();                      // adjust the scale for the next step
//
// Why: f16 gradients of a small loss underflow to zero; multiplying the loss
// (here: the backward seed, which is the same thing, d(s*L) = s*dL) by a large
// scale keeps them in range, and the optimizer divides it out again.
// The rules (cuda::LossScaleOptions, optim/grad_scaler_cuda.h): start at
// 65536; a step whose gradients hold inf/nan is skipped and the scale halves;
// after 2000 clean steps in a row the scale doubles.
//
// The state (scale, found_inf, clean-step count) lives in device memory and
// every decision is taken there, so step() and update() never wait for the
// host. scale() and last_step_skipped() download it and therefore
// SYNCHRONIZE the device: use them for logging, not inside the step.
#pragma once

#include "optim/grad_scaler_cuda.h"
#include "optim/optimizer.h"
#include "tensor/device.h"
#include "tensor/tensor.h"

namespace b3 {

class GradScaler {
 public:
  // `device` must be a usable CUDA device (the one the model trains on).
  explicit GradScaler(const Device& device, const cuda::LossScaleOptions& options = {});

  // A [] f32 tensor on the device holding the current scale, to seed the
  // backward pass: loss.backward(scaler.scale_seed()) (the loss must be f32).
  // A fresh tensor each call (a device-side copy, no synchronization).
  Tensor scale_seed() const;

  // PyTorch's unscale_: divides every gradient of `optimizer` by the scale
  // in place and checks them for inf/nan (one fused launch, no host wait).
  // At most once per step (between update() calls), else std::logic_error.
  void unscale_(Optimizer& optimizer);

  // Unscales the gradients in place unless unscale_ did already this step
  // (so .grad afterwards holds the true gradients, as in PyTorch), then runs
  // the optimizer's fused step; the step is skipped on the device when a
  // gradient was not finite.
  void step(Optimizer& optimizer);

  // Backs off (x0.5) after a skipped step, grows (x2) after growth_interval
  // clean steps. Call once per step, after step().
  void update();

  // The current scale. Synchronizes the device (logging only).
  double scale() const;
  // Whether the last step() found inf/nan and was skipped. Synchronizes.
  bool last_step_skipped() const;

  const cuda::LossScaleOptions& options() const { return options_; }
  const Device& device() const { return device_; }

  // {"scale": f32 [], "growth_tracker": i64 []} on the CPU (as PyTorch's
  // GradScaler.state_dict's scale and _growth_tracker); downloading synchronizes.
  NamedTensors state_dict() const;
  void load_state_dict(const NamedTensors& state);

 private:
  cuda::LossScaleState* state_pointer() const;
  cuda::LossScaleState download() const;

  Device device_;
  cuda::LossScaleOptions options_;
  // 16 bytes of device memory holding a cuda::LossScaleState, allocated as
  // an i32 [4] tensor and only ever read or written as raw bytes (element 0
  // holds the f32 scale's bits).
  Tensor state_;
  bool unscaled_this_step_ = false;  // unscale_ ran since the last update()
};

}  // namespace b3
