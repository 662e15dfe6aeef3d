// Module bookkeeping: torchvision-style dotted names for nested modules and
// Sequential, buffers apart from parameters, recursive train()/eval(),
// zero_grad, in-place dtype conversion that keeps tensor identity,
// parameter_count, and the names that must be refused.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "layers/module.h"
#include "tensor/ops.h"

using namespace b3;

namespace {

// out = x * weight (+ bias); a buffer counts the forward calls.
class Affine : public Module {
 public:
  explicit Affine(int64_t n, bool with_bias = true) {
    weight = register_parameter("weight", full({n}, 2.0));
    if (with_bias) bias = register_parameter("bias", zeros({n}));
    calls = register_buffer("calls", zeros({1}, DType::i64));
  }
  Tensor forward(const Tensor& x) override {
    Tensor y = mul(x, weight);
    return bias.defined() ? add(y, bias) : y;
  }
  Tensor weight, bias, calls;
};

// A block holding a Sequential under the name "block", like torchvision's
// InvertedResidual ("features.1.block.0.0.weight").
class Block : public Module {
 public:
  Block() {
    block = register_module("block", std::make_shared<Sequential>());
    block->push_back(std::make_shared<Affine>(3));
    block->push_back(std::make_shared<Affine>(3, false));
    scale = register_parameter("scale", ones({1}));
    running = register_buffer("running_mean", zeros({3}));
  }
  Tensor forward(const Tensor& x) override { return block->forward(x); }
  std::shared_ptr<Sequential> block;
  Tensor scale, running;
};

// Exposes the protected registration calls so the tests can try bad names.
class Open : public Module {
 public:
  Tensor forward(const Tensor& x) override { return x; }
  Tensor parameter(const std::string& name, Tensor t) { return register_parameter(name, t); }
  Tensor buffer(const std::string& name, Tensor t) { return register_buffer(name, t); }
  void child(const std::string& name, std::shared_ptr<Module> m) { register_module(name, m); }
};

std::vector<std::string> names_of(const std::vector<std::pair<std::string, Tensor>>& named) {
  std::vector<std::string> names;
  for (const auto& [name, tensor] : named) names.push_back(name);
  return names;
}

}  // namespace

TEST_CASE("module: dotted names for nested modules and Sequential") {
  Sequential features;
  features.push_back(std::make_shared<Affine>(3));
  features.push_back(std::make_shared<Block>());
  CHECK(features.size() == 2);
  CHECK(names_of(features.named_parameters()) ==
        std::vector<std::string>{"0.weight", "0.bias", "1.scale", "1.block.0.weight",
                                 "1.block.0.bias", "1.block.1.weight"});
  CHECK(names_of(features.named_buffers()) == std::vector<std::string>{"0.calls", "1.running_mean",
                                                                       "1.block.0.calls",
                                                                       "1.block.1.calls"});
  const auto children = features.named_children();
  REQUIRE(children.size() == 2);
  CHECK(children[0].first == "0");
  CHECK(children[1].first == "1");
  CHECK(children[1].second.get() == features.at(1).get());
  // parameters() is the same tensors, in the same order.
  const std::vector<Tensor> params = features.parameters();
  const auto named = features.named_parameters();
  REQUIRE(params.size() == named.size());
  for (size_t i = 0; i < params.size(); ++i) CHECK(params[i].is_same(named[i].second));
  CHECK(features.describe() == "Sequential");
}

TEST_CASE("module: parameters require grad, buffers do not, parameter_count") {
  Block b;
  for (const Tensor& p : b.parameters()) CHECK(p.requires_grad());
  for (const auto& [name, t] : b.named_buffers()) CHECK_FALSE(t.requires_grad());
  CHECK(b.parameter_count() == 1 + 3 + 3 + 3);  // scale, weight + bias, weight
  Sequential empty_model;
  CHECK(empty_model.parameter_count() == 0);
  CHECK(empty_model.parameters().empty());
}

TEST_CASE("module: Sequential runs its children in order") {
  Sequential s;
  auto first = s.push_back(std::make_shared<Affine>(2));
  auto second = s.push_back(std::make_shared<Affine>(2));
  first->bias.fill_(1.0);
  second->weight.fill_(-3.0);
  // ((x * 2) + 1) * -3 + 0
  CHECK(s(from_doubles({1, 2}, {2})).to_doubles() == std::vector<double>{-9, -15});
  CHECK(s.at(0).get() == first.get());
}

TEST_CASE("module: train() and eval() reach every descendant") {
  Sequential outer;
  auto block = outer.push_back(std::make_shared<Block>());
  CHECK(outer.is_training());
  outer.eval();
  CHECK_FALSE(outer.is_training());
  CHECK_FALSE(block->is_training());
  CHECK_FALSE(block->block->is_training());
  CHECK_FALSE(block->block->at(1)->is_training());
  outer.train();
  CHECK(block->block->at(0)->is_training());
  outer.train(false);
  CHECK_FALSE(block->block->at(0)->is_training());
}

TEST_CASE("module: zero_grad drops every parameter's gradient") {
  Block b;
  const Tensor x = from_doubles({1, 2, 3}, {3});
  sum(b(x)).backward();
  for (const auto& entry : b.named_parameters()) {
    const auto& name = entry.first;  // not structured bindings: CAPTURE's
    const auto& p = entry.second;    // lambda cannot take them (clang 14)
    CAPTURE(name);
    if (name == "scale") {
      CHECK_FALSE(p.grad().defined());  // not used in forward
    } else {
      CHECK(p.grad().defined());
    }
  }
  // Gradients accumulate across calls until zero_grad.
  const double before = b.block->at(1)->parameters()[0].grad().to_doubles()[0];
  sum(b(x)).backward();
  CHECK(b.block->at(1)->parameters()[0].grad().to_doubles()[0] == 2 * before);
  b.zero_grad();
  for (const Tensor& p : b.parameters()) CHECK_FALSE(p.grad().defined());
}

TEST_CASE("module: to(f64) converts in place and keeps each tensor's identity") {
  Block b;
  const Tensor held_weight = b.block->at(0)->parameters()[0];  // a handle taken before
  const Tensor held_buffer = b.running;
  const Tensor held_counter = std::dynamic_pointer_cast<Affine>(b.block->at(0))->calls;
  sum(b(from_doubles({1, 2, 3}, {3}))).backward();
  REQUIRE(held_weight.grad().defined());
  b.to(DType::f64);
  CHECK(held_weight.dtype() == DType::f64);
  CHECK(held_weight.requires_grad());
  CHECK(held_weight.is_leaf());
  CHECK(held_weight.to_doubles() == std::vector<double>{2, 2, 2});
  CHECK_FALSE(held_weight.grad().defined());  // an f32 gradient cannot stay on an f64 tensor
  CHECK(held_buffer.dtype() == DType::f64);
  CHECK(held_counter.dtype() == DType::i64);  // integer buffers are left alone
  for (const Tensor& p : b.parameters()) CHECK(p.dtype() == DType::f64);
  // The module computes in f64 now, and gradients reach the held handle.
  const Tensor y = b(from_doubles({1, 2, 3}, {3}, DType::f64));
  CHECK(y.dtype() == DType::f64);
  sum(y).backward();
  REQUIRE(held_weight.grad().defined());
  CHECK(held_weight.grad().dtype() == DType::f64);
  // And back to f32.
  b.to(DType::f32);
  CHECK(held_weight.dtype() == DType::f32);
  CHECK(held_weight.to_doubles() == std::vector<double>{2, 2, 2});
}

TEST_CASE("module: bad names and bad registrations throw") {
  Open m;
  CHECK_THROWS_WITH_AS(m.parameter("conv.weight", zeros({1})),
                       doctest::Contains("register_parameter: name \"conv.weight\""),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(m.buffer("a.b", zeros({1})), doctest::Contains("contain no '.'"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(m.child("x.y", std::make_shared<Open>()),
                       doctest::Contains("register_module: name \"x.y\""), std::invalid_argument);
  CHECK_THROWS_AS(m.parameter("", zeros({1})), std::invalid_argument);
  CHECK_THROWS_WITH_AS(m.child("null", nullptr), doctest::Contains("is null"),
                       std::invalid_argument);
  // A name can be used once per module, across parameters, buffers and children
  // (as in PyTorch, whose state_dict keys must be unique).
  m.parameter("weight", zeros({1}));
  CHECK_THROWS_WITH_AS(m.parameter("weight", zeros({1})),
                       doctest::Contains("\"weight\" is already"), std::invalid_argument);
  CHECK_THROWS_AS(m.buffer("weight", zeros({1})), std::invalid_argument);
  CHECK_THROWS_AS(m.child("weight", std::make_shared<Open>()), std::invalid_argument);
  m.child("inner", std::make_shared<Open>());
  CHECK_THROWS_AS(m.buffer("inner", zeros({1})), std::invalid_argument);
  // A parameter must be a floating leaf.
  Tensor leaf = zeros({2});
  leaf.set_requires_grad(true);
  CHECK_THROWS_WITH_AS(m.parameter("derived", scale(leaf, 2.0)), doctest::Contains("leaf"),
                       std::invalid_argument);
  CHECK_THROWS_AS(m.parameter("labels", zeros({2}, DType::i64)), std::invalid_argument);
  CHECK(names_of(m.named_parameters()) == std::vector<std::string>{"weight"});
}
