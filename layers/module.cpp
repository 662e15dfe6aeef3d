// Module bookkeeping: names, recursion over children, modes, dtype changes.
#include "layers/module.h"

#include <stdexcept>

#include "autograd/node.h"

namespace b3 {

static void check_name(const std::string& name, const char* what) {
  if (name.empty() || name.find('.') != std::string::npos) {
    throw std::invalid_argument(std::string(what) + ": name \"" + name +
                                "\" must be non-empty and contain no '.'");
  }
}

// PyTorch refuses a name already taken by a parameter, buffer or child:
// state_dict keys must be unique.
template <typename Entries>
static bool has_name(const Entries& entries, const std::string& name) {
  for (const auto& entry : entries)
    if (entry.first == name) return true;
  return false;
}

void Module::check_unused(const std::string& name, const char* what) const {
  if (has_name(parameters_, name) || has_name(buffers_, name) || has_name(children_, name)) {
    throw std::invalid_argument(std::string(what) + ": name \"" + name +
                                "\" is already used in this module (" + describe() + ")");
  }
}

Tensor Module::register_parameter(const std::string& name, Tensor tensor) {
  check_name(name, "register_parameter");
  check_unused(name, "register_parameter");
  if (!tensor.defined()) {
    throw std::invalid_argument("register_parameter: parameter \"" + name + "\" is undefined");
  }
  if (!tensor.is_leaf()) {
    throw std::invalid_argument("register_parameter: parameter \"" + name +
                                "\" must be a leaf tensor (made by " + tensor.grad_fn()->name() +
                                "); register a detach()ed copy");
  }
  if (!tensor.requires_grad()) tensor.set_requires_grad(true);
  parameters_.emplace_back(name, tensor);
  return tensor;
}

Tensor Module::register_buffer(const std::string& name, Tensor tensor) {
  check_name(name, "register_buffer");
  check_unused(name, "register_buffer");
  buffers_.emplace_back(name, tensor);
  return tensor;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> child) {
  check_name(name, "register_module");
  check_unused(name, "register_module");
  if (!child) throw std::invalid_argument("register_module: module \"" + name + "\" is null");
  children_.emplace_back(name, std::move(child));
}

void Module::collect(const std::string& prefix, bool buffers,
                     std::vector<std::pair<std::string, Tensor>>& out) const {
  for (const auto& [name, tensor] : buffers ? buffers_ : parameters_)
    out.emplace_back(prefix + name, tensor);
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", buffers, out);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect("", false, out);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect("", true, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, tensor] : named_parameters()) out.push_back(tensor);
  return out;
}

int64_t Module::parameter_count() const {
  int64_t total = 0;
  for (const Tensor& p : parameters()) total += p.numel();
  return total;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::zero_grad() {
  for (Tensor& p : parameters()) p.zero_grad();
}

void Module::to(DType dtype) {
  auto convert = [dtype](Tensor& t) {
    if (is_floating(t.dtype()) && t.dtype() != dtype) t.set_data(t.detach().to(dtype));
  };
  for (auto& [name, t] : parameters_) convert(t);
  for (auto& [name, t] : buffers_) convert(t);
  for (auto& [name, child] : children_) child->to(dtype);
}

void Module::to(const Device& device) {
  require_device_available(device, "Module::to");
  // Every parameter and buffer moves, integer ones too (BatchNorm's
  // num_batches_tracked is counted on the device, by a kernel on the compute
  // stream, as PyTorch does).
  auto move = [&device](Tensor& t) {
    if (t.device() == device) return;
    const Tensor grad = t.grad();
    t.set_data(t.detach().to(device));
    if (grad.defined()) t.set_grad(grad.to(device));
  };
  for (auto& [name, t] : parameters_) move(t);
  for (auto& [name, t] : buffers_) move(t);
  for (auto& [name, child] : children_) child->to(device);
}

void Module::to(MemoryFormat format) {
  auto convert = [format](Tensor& t) {
    if (t.dim() != 4 || t.is_contiguous(format)) return;
    const Tensor grad = t.grad();
    t.set_data(t.detach().contiguous(format));
    if (grad.defined()) t.set_grad(grad.contiguous(format));
  };
  for (auto& [name, t] : parameters_) convert(t);
  for (auto& [name, t] : buffers_) convert(t);
  for (auto& [name, child] : children_) child->to(format);
}

Tensor Sequential::forward(const Tensor& input) {
  Tensor x = input;
  for (const auto& layer : layers_) x = layer->forward(x);
  return x;
}

}  // namespace b3
