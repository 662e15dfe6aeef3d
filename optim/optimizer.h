// Optimizer: the base of SGD, Adam and AdamW.
//
// An optimizer holds the parameters it updates (the same tensor handles the
// model holds) and per-parameter state (momentum buffers, moment estimates).
// step() reads each parameter's .grad and updates the parameter in place,
// skipping parameters without a gradient, as torch.optim does. Computing
// gradients (backward) and applying them (step) stay separate calls, so that
// gradients can be all-reduced between them for data-parallel training.
//
// State round-trips through state_dict()/load_state_dict() as named tensors
// ("state.<param index>.<name>", e.g. "state.3.exp_avg", "state.3.step"),
// ready for a safetensors checkpoint.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace b3 {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Optimizer {
 public:
  Optimizer(std::vector<Tensor> parameters, double lr, const char* name);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter that has a gradient.
  void step();
  // Drops every parameter's gradient (set_to_none, PyTorch 2's default).
  void zero_grad();

  double lr() const { return lr_; }
  void set_lr(double lr);
  const std::vector<Tensor>& parameters() const { return parameters_; }

  NamedTensors state_dict() const;
  // Restores state saved by state_dict() from an optimizer of the same kind over
  // parameters of the same shapes; names, shapes and dtypes must match.
  void load_state_dict(const NamedTensors& state);

 protected:
  // Updates parameter `index` from `grad` (same layout as the parameter, same
  // dtype), with `state` the tensors registered for it by init_state.
  virtual void update(size_t index, Tensor& parameter, const Tensor& grad,
                      std::vector<Tensor>& state) = 0;
  // Names of the per-parameter state tensors, created lazily on the first step.
  virtual std::vector<std::string> state_names() const = 0;
  // A new state tensor `name` for `parameter` (zeros unless the algorithm says otherwise).
  virtual Tensor init_state(const std::string& name, const Tensor& parameter) const;

  const char* name_;

 private:
  std::vector<Tensor> parameters_;
  std::vector<std::vector<Tensor>> state_;  // per parameter; empty until its first step
  double lr_;
};

}  // namespace b3
