// Module: the base of every layer and model, as torch.nn.Module.
//
// A module owns parameters (trainable tensors), buffers (state such as
// BatchNorm's running statistics) and child modules, each under a name, so
// that named_parameters() yields torchvision's dotted state_dict keys
// ("features.1.block.0.0.weight"). Gradients of parameters accumulate (+=)
// across backward passes until zero_grad() drops them.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace b3 {

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  virtual Tensor forward(const Tensor& input) = 0;
  Tensor operator()(const Tensor& input) { return forward(input); }

  // Recursive, in registration order, names joined with '.'.
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  std::vector<Tensor> parameters() const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const {
    return children_;
  }
  int64_t parameter_count() const;

  // Training mode (batch statistics, dropout on) or evaluation mode; recursive.
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Drops every parameter's gradient (PyTorch's zero_grad(set_to_none=True)).
  void zero_grad();
  // Converts floating parameters and buffers to `dtype` in place (the tensors
  // keep their identity, so optimizers holding them see the change).
  void to(DType dtype);
  // Moves every parameter and buffer (and any gradient) to `device`
  // in place, as module.to(device); the tensors keep their identity. Integer
  // buffers (BatchNorm's num_batches_tracked) move too, as in PyTorch.
  void to(const Device& device);
  // Lays every 4-D parameter and buffer out in `format` in place, as
  // module.to(memory_format=torch.channels_last): convolution weights in
  // channels_last are what cuDNN's NHWC kernels read (KRSC) with no copy.
  void to(MemoryFormat format);

  // A short description for tables, e.g. "Conv2d(16, 64, kernel 1, stride 1)".
  virtual std::string describe() const { return "Module"; }

 protected:
  Tensor register_parameter(const std::string& name, Tensor tensor);
  Tensor register_buffer(const std::string& name, Tensor tensor);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> child);
  void check_unused(const std::string& name, const char* what) const;
  void collect(const std::string& prefix, bool buffers,
               std::vector<std::pair<std::string, Tensor>>& out) const;

  std::vector<std::pair<std::string, Tensor>> parameters_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

// Runs its children in order; they are named "0", "1", ... as in nn.Sequential.
class Sequential : public Module {
 public:
  Sequential() = default;
  template <typename M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    const std::string name = std::to_string(layers_.size());
    layers_.push_back(m);
    return register_module(name, m);
  }
  Tensor forward(const Tensor& input) override;
  size_t size() const { return layers_.size(); }
  const std::shared_ptr<Module>& at(size_t i) const { return layers_.at(i); }
  std::string describe() const override { return "Sequential"; }

 private:
  std::vector<std::shared_ptr<Module>> layers_;
};

}  // namespace b3
