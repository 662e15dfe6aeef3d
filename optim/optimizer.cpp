// The parts every optimizer shares: walking the parameters, skipping those
// without gradients, lazily created state, and saving/restoring that state.
#include "optim/optimizer.h"

#include <stdexcept>

#include "autograd/grad_mode.h"
#include "tensor/ops.h"

namespace b3 {

Optimizer::Optimizer(std::vector<Tensor> parameters, double lr, const char* name)
    : name_(name), parameters_(std::move(parameters)), state_(parameters_.size()), lr_(0.0) {
  if (parameters_.empty()) {
    throw std::invalid_argument(std::string(name_) + ": got an empty parameter list");
  }
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const Tensor& p = parameters_[i];
    if (!p.defined() || !p.requires_grad() || !p.is_leaf()) {
      throw std::invalid_argument(std::string(name_) + ": parameter " + std::to_string(i) +
                                  " must be a leaf tensor that requires grad");
    }
  }
  set_lr(lr);
}

void Optimizer::set_lr(double lr) {
  if (!(lr >= 0.0)) {
    throw std::invalid_argument(std::string(name_) + ": invalid learning rate " +
                                std::to_string(lr) + " (must be >= 0)");
  }
  lr_ = lr;
}

Tensor Optimizer::init_state(const std::string&, const Tensor& parameter) const {
  return zeros_like(parameter);
}

void Optimizer::step() {
  NoGradGuard no_grad;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    Tensor& p = parameters_[i];
    const Tensor grad = p.grad();
    if (!grad.defined()) continue;
    require_cpu(name_, {p, grad});
    if (!p.is_dense()) {
      throw std::invalid_argument(std::string(name_) + ": parameter " + std::to_string(i) +
                                  " is not dense: " + p.str());
    }
    if (state_[i].empty()) {
      for (const std::string& state_name : state_names())
        state_[i].push_back(init_state(state_name, p));
    }
    update(i, p, align_layout(grad.to(p.dtype()), p), state_[i]);
  }
}

void Optimizer::zero_grad() {
  for (Tensor& p : parameters_) p.zero_grad();
}

NamedTensors Optimizer::state_dict() const {
  NamedTensors out;
  const std::vector<std::string> names = state_names();
  for (size_t i = 0; i < state_.size(); ++i)
    for (size_t k = 0; k < state_[i].size(); ++k)
      out.emplace_back("state." + std::to_string(i) + "." + names[k], state_[i][k]);
  return out;
}

void Optimizer::load_state_dict(const NamedTensors& state) {
  const std::vector<std::string> names = state_names();
  std::vector<std::vector<Tensor>> restored(parameters_.size());
  size_t used = 0;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    std::vector<Tensor> found;
    for (const std::string& state_name : names) {
      const std::string key = "state." + std::to_string(i) + "." + state_name;
      for (const auto& [name, tensor] : state) {
        if (name != key) continue;
        const Tensor reference = init_state(state_name, parameters_[i]);
        if (tensor.shape() != reference.shape() || tensor.dtype() != reference.dtype()) {
          throw std::invalid_argument(std::string(name_) + ": load_state_dict: " + key + " is " +
                                      tensor.str() + ", expected " + reference.str());
        }
        Tensor copy = empty_like(reference);
        copy.copy_(tensor);
        found.push_back(copy);
      }
    }
    if (!found.empty() && found.size() != names.size()) {
      throw std::invalid_argument(std::string(name_) + ": load_state_dict: parameter " +
                                  std::to_string(i) + " has only part of its state");
    }
    used += found.size();
    restored[i] = std::move(found);
  }
  if (used != state.size()) {
    throw std::invalid_argument(std::string(name_) +
                                ": load_state_dict: " + std::to_string(state.size() - used) +
                                " entries do not belong to this optimizer (wrong kind, or a "
                                "model with other parameters?)");
  }
  state_ = std::move(restored);
}

}  // namespace b3
