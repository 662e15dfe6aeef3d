// ReLU, Hardsigmoid, Hardswish: forward against PyTorch's formulas written
// here in double, gradcheck, both memory formats, odd shapes.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "autograd/gradcheck.h"
#include "layers/activations.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

double reference_relu(double x) { return x > 0 ? x : 0; }
double reference_hardsigmoid(double x) { return std::min(std::max(x + 3.0, 0.0), 6.0) / 6.0; }
double reference_hardswish(double x) { return x * reference_hardsigmoid(x); }

struct Case {
  const char* name;
  std::function<Tensor(const Tensor&)> op;
  double (*reference)(double);
};

const Case kCases[] = {
    {"relu", relu, reference_relu},
    {"hardsigmoid", hardsigmoid, reference_hardsigmoid},
    {"hardswish", hardswish, reference_hardswish},
};

const Shape kShapes[] = {{1, 3, 7, 7}, {3, 5, 1, 1}, {2, 13, 5, 3}};

}  // namespace

TEST_CASE("activations: forward matches the PyTorch formula, both formats") {
  Generator gen(1);
  for (const Case& c : kCases) {
    for (const Shape& shape : kShapes) {
      for (MemoryFormat format : test::both_formats()) {
        CAPTURE(c.name);
        CAPTURE(shape_str(shape));
        CAPTURE(memory_format_name(format));
        // Scale 4 spreads the inputs across every piece (x < -3, the ramp, x > 3).
        const Tensor x = test::random_tensor(shape, gen, DType::f32, format, 4.0);
        const Tensor y = c.op(x);
        CHECK(y.shape() == x.shape());
        CHECK(y.suggest_memory_format() == x.suggest_memory_format());
        std::vector<double> expected = x.to_doubles();
        for (double& v : expected) v = c.reference(v);
        // f32 evaluation of the same formula: a few ulps of values up to ~12.
        CHECK(test::max_relative_error(y, expected) < 1e-6);
      }
    }
  }
}

TEST_CASE("activations: gradcheck in double, both formats") {
  Generator gen(2);
  for (const Case& c : kCases) {
    for (const Shape& shape : kShapes) {
      for (MemoryFormat format : test::both_formats()) {
        CAPTURE(c.name);
        CAPTURE(shape_str(shape));
        CAPTURE(memory_format_name(format));
        Tensor x = test::random_tensor(shape, gen, DType::f64, format, 4.0);
        x.set_requires_grad(true);
        B3_CHECK_GRADCHECK(gradcheck([&] { return c.op(x); }, {x}));
      }
    }
  }
}

TEST_CASE("activations: derivatives at the kinks are PyTorch's") {
  // relu'(0) = 0; hardsigmoid' = 0 at +-3; hardswish'(-3) = -1/2, hardswish'(3) = 3/2.
  const Tensor points = from_doubles({-3.0, 0.0, 3.0}, {3}, DType::f64);
  const std::vector<std::pair<std::function<Tensor(const Tensor&)>, std::vector<double>>> cases{
      {relu, {0.0, 0.0, 1.0}},
      {hardsigmoid, {0.0, 1.0 / 6.0, 0.0}},
      {hardswish, {-0.5, 0.5, 1.5}},
  };
  for (const auto& [op, expected] : cases) {
    Tensor x = points.clone();
    x.set_requires_grad(true);
    op(x).backward(ones({3}, DType::f64));
    CHECK(test::max_relative_error(x.grad(), expected) < 1e-15);
  }
}

TEST_CASE("activations: modules forward to the functions") {
  Generator gen(3);
  const Tensor x = test::random_tensor({2, 4, 3, 3}, gen, DType::f32);
  ReLU relu_module;
  Hardswish hardswish_module;
  Hardsigmoid hardsigmoid_module;
  CHECK(test::max_relative_error(relu_module(x), relu(x)) == 0.0);
  CHECK(test::max_relative_error(hardswish_module(x), hardswish(x)) == 0.0);
  CHECK(test::max_relative_error(hardsigmoid_module(x), hardsigmoid(x)) == 0.0);
  CHECK(relu_module.parameters().empty());
}

TEST_CASE("activations: integer input is refused with the op's name") {
  const Tensor x = zeros({2, 2}, DType::i32);
  CHECK_THROWS_WITH_AS(relu(x), doctest::Contains("relu: dtype i32"), std::invalid_argument);
}
