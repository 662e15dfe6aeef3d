// Pointwise activations with PyTorch's definitions, and their Modules:
//   relu(x)        = max(x, 0)
//   hardsigmoid(x) = relu6(x + 3) / 6        = clamp(x / 6 + 1/2, 0, 1)
//   hardswish(x)   = x * relu6(x + 3) / 6    = x * hardsigmoid(x)
// Derivatives (PyTorch's choices at the kinks):
//   relu'        = 1 for x > 0, else 0
//   hardsigmoid' = 1/6 for -3 < x < 3, else 0
//   hardswish'   = 0 for x < -3, x / 3 + 1/2 for -3 <= x <= 3, 1 for x > 3
// Any shape and memory format; the output keeps the input's layout.
#pragma once

#include <memory>

#include "layers/module.h"

namespace b3 {

// The activations by name, for code that picks one at run time: MobileNetV3's
// blocks and the fused BatchNorm + activation op (layers/batchnorm2d.h, which
// takes none, relu and hardswish). none is the identity.
enum class Activation { none, relu, hardsigmoid, hardswish };

// "none", "relu", "hardsigmoid" or "hardswish".
const char* activation_name(Activation activation);

Tensor relu(const Tensor& x);
Tensor hardsigmoid(const Tensor& x);
Tensor hardswish(const Tensor& x);

class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override { return relu(x); }
  std::string describe() const override { return "ReLU"; }
};

class Hardsigmoid : public Module {
 public:
  Tensor forward(const Tensor& x) override { return hardsigmoid(x); }
  std::string describe() const override { return "Hardsigmoid"; }
};

class Hardswish : public Module {
 public:
  Tensor forward(const Tensor& x) override { return hardswish(x); }
  std::string describe() const override { return "Hardswish"; }
};

// The Module of `kind` (ReLU, Hardsigmoid or Hardswish); null for none.
std::shared_ptr<Module> activation_module(Activation kind);

}  // namespace b3
