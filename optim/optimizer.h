// Optimizer: the base of SGD, Adam and AdamW.
//
// An optimizer holds the parameters it updates (the same tensor handles the
// model holds) and per-parameter state (momentum buffers, moment estimates).
// step() reads each parameter's .grad and updates the parameter in place,
// skipping parameters without a gradient, as torch.optim does. Computing
// gradients (backward) and applying them (step) stay separate calls, so that
// gradients can be all-reduced between them for data-parallel training.
//
// Two devices, one algorithm:
//   CPU   one loop per parameter (update(), in sgd.cpp / adam.cpp).
//   CUDA  every parameter updated by ONE fused kernel launch
//         (optim/sgd_cuda.h, optim/adam_cuda.h) over a MultiTensorTable
//         (optim/multi_tensor_cuda.h) of device pointers: parameter,
//         gradient, state. The table is built on the first step and rebuilt
//         only when a pointer changes (a gradient reallocated, state loaded),
//         so a step copies nothing from the host and never synchronizes.
//         All state (moments, momentum buffers, step counts) lives on the
//         device. Parameters must be f32 and all on one CUDA device (a mix of
//         CPU and CUDA parameters is an error); gradients f32 or f16.
//
// zero_grad() differs by device, on purpose:
//   CPU   drops every gradient (PyTorch's set_to_none=True, its default);
//   CUDA  keeps each existing gradient tensor and zeroes it in place
//         (PyTorch's set_to_none=False), so the gradient buffers, and with
//         them the fused kernel's table, stay at the same addresses from step
//         to step (no table rebuild, and a CUDA graph could capture the step).
//         A parameter that never received a gradient still has none and is
//         still skipped; one that did is then updated with a zero gradient
//         when a later backward does not reach it, as in PyTorch with
//         set_to_none=False.
//
// Step counts on CUDA: the fused kernels take one device step counter per
// launch (Adam's bias correction, SGD's first-step rule). Parameters that
// have always been stepped together share one counter tensor, which is also
// their "step" state entry; when only part of them gets a gradient, that part
// gets its own copy of the counter. So each parameter's count is exactly
// PyTorch's per-parameter count, and a model whose parameters all train
// (the normal case) is one group: one launch per step.
//
// State round-trips through state_dict()/load_state_dict() as named tensors
// ("state.<param index>.<name>", e.g. "state.3.exp_avg", "state.3.step"),
// ready for a safetensors checkpoint. state_dict() returns CPU tensors: the
// CPU state itself, device state downloaded (which synchronizes the device).
// load_state_dict() puts moments on the parameter's device.
#pragma once

#include <cstdint>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "optim/grad_scaler_cuda.h"
#include "optim/multi_tensor_cuda.h"
#include "tensor/cuda_stream.h"
#include "tensor/tensor.h"

namespace b3 {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Where every gradient the next CUDA step will read is (GradScaler checks
// them for inf/nan with one launch): list `list` of `table`, all of `dtype`.
struct DeviceGradients {
  const cuda::MultiTensorTable* table = nullptr;
  int list = 0;
  DType dtype = DType::f32;
  Device device;
};

class Optimizer {
 public:
  Optimizer(std::vector<Tensor> parameters, double lr, const char* name);
  virtual ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter that has a gradient.
  void step() { step(nullptr); }
  // The same with dynamic loss scaling (what GradScaler::step calls; CUDA
  // only): each gradient is divided by scaler->scale inside the fused update,
  // and when scaler->found_inf is set the whole step is skipped on the device
  // (parameters, state and step counts unchanged). nullptr: a plain step.
  void step(const cuda::LossScaleState* scaler);
  // CPU: drops every gradient. CUDA: zeroes existing gradients in place (see above).
  void zero_grad();

  double lr() const { return lr_; }
  void set_lr(double lr);
  const std::vector<Tensor>& parameters() const { return parameters_; }
  const char* name() const { return name_; }

  // The device the parameters live on; throws if they are spread over several.
  Device device() const;

  // For GradScaler: prepares the CUDA step (state, table) and returns where
  // the gradients it will read are. Throws unless the parameters are on a
  // CUDA device and all gradients have one dtype.
  DeviceGradients device_gradients();

  NamedTensors state_dict() const;
  // Restores state saved by state_dict() from an optimizer of the same kind over
  // parameters of the same shapes; names, shapes and dtypes must match.
  void load_state_dict(const NamedTensors& state);

 protected:
  // --- The CPU path ---
  // Updates parameter `index` from `grad` (same layout as the parameter, same
  // dtype), with `state` the tensors registered for it by init_state.
  virtual void update(size_t index, Tensor& parameter, const Tensor& grad,
                      std::vector<Tensor>& state) = 0;
  // Names of the per-parameter state tensors, created lazily on the first step.
  virtual std::vector<std::string> state_names() const = 0;
  // A new state tensor `name` for `parameter` (zeros unless the algorithm says otherwise).
  virtual Tensor init_state(const std::string& name, const Tensor& parameter) const;

  // --- The CUDA path: the fused kernel's table and launch ---
  // Lists per tensor of the kernel's table (cuda::kSgdLists, kAdamLists).
  virtual int device_table_lists() const = 0;
  // The state tensors (by state name) at lists 2, 3, ... of the table; the
  // remaining lists (the optional f16 weight copy) are left null.
  virtual std::vector<std::string> device_table_state() const = 0;
  // One launch over `table` with the group's step counter `step` (device i64).
  virtual void launch_device_step(const cuda::MultiTensorTable& table, DType grad_dtype,
                                  int64_t* step, const cuda::LossScaleState* scaler,
                                  const cuda::Stream& stream) = 0;

  const char* name_;

 private:
  struct DevicePlan;  // the CUDA tables and step groups (optimizer.cpp)

  void step_on_cpu();
  void step_on_device(const Device& device, const cuda::LossScaleState* scaler);
  // Creates or moves state to `device`, aligns gradient layouts, assigns step
  // counters, and rebuilds the tables when any pointer changed; in steps:
  DevicePlan& prepare_device_step(const Device& device);
  std::vector<size_t> device_step_members(const Device& device);
  void place_state_on(const Device& device, const std::vector<size_t>& members);
  void unshare_step_counters(const std::vector<size_t>& members);
  std::vector<size_t> device_table_state_indices() const;
  std::unique_ptr<DevicePlan> build_device_plan(const Device& device,
                                                const std::vector<size_t>& members,
                                                const std::vector<size_t>& table_state,
                                                std::vector<uintptr_t> signature);
  int step_state_index() const;  // index of "step" in state_names(), or -1
  Tensor step_counter(size_t index) const;
  void set_step_counter(size_t index, const Tensor& counter);

  std::vector<Tensor> parameters_;
  std::vector<std::vector<Tensor>> state_;  // per parameter; empty until its first step
  // CUDA step counters of parameters whose state has no "step" entry (SGD
  // without momentum); the others keep theirs in state_.
  std::vector<Tensor> device_steps_;
  std::unique_ptr<DevicePlan> plan_;
  static constexpr int kUnknownStepIndex = -2;
  mutable int step_index_ = kUnknownStepIndex;  // cache of step_state_index()
  double lr_;
};

}  // namespace b3
