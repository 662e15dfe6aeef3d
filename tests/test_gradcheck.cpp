// gradcheck itself: it must pass a correct backward, fail a wrong one, skip
// points at a kink (and only those), honor max_points_per_tensor, and refuse
// inputs it cannot check. A checker that cannot fail proves nothing.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "autograd/node.h"
#include "layers/activations.h"
#include "layers/module.h"
#include "tensor/ops.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

// y = x^3 elementwise with a hand-written backward dy/dx = factor * x^power,
// so a test can plant a correct (3, 2) or a wrong (2, 1) derivative.
Tensor cube(const Tensor& x, double factor, int power) {
  Tensor y = x.detach().clone();
  double* p = y.data<double>();
  for (int64_t i = 0; i < y.numel(); ++i) p[i] = p[i] * p[i] * p[i];
  if (should_record({x})) {
    const Tensor saved = x.detach();
    record_lambda(y, "CubeBackward", {x}, [saved, factor, power](const Tensor& g) {
      Tensor d = saved.clone();
      double* q = d.data<double>();
      for (int64_t i = 0; i < d.numel(); ++i) {
        double derivative = factor;
        for (int k = 0; k < power; ++k) derivative *= q[i];
        q[i] = derivative;
      }
      return std::vector<Tensor>{mul(g, d)};
    });
  }
  return y;
}

// out = x * weight + bias, elementwise over [2, 3] (a module with two parameters).
class ScaleShift : public Module {
 public:
  ScaleShift() {
    weight_ = register_parameter("weight", from_doubles({0.5, -1, 2, 1.5, 0.25, -0.75}, {2, 3}));
    bias_ = register_parameter("bias", from_doubles({0.1, 0.2, 0.3, -0.1, -0.2, -0.3}, {2, 3}));
  }
  Tensor forward(const Tensor& x) override { return add(mul(x, weight_), bias_); }

 private:
  Tensor weight_, bias_;
};

Tensor f64_leaf(const std::vector<double>& values, const Shape& shape) {
  Tensor t = from_doubles(values, shape, DType::f64);
  t.set_requires_grad(true);
  return t;
}

}  // namespace

TEST_CASE("gradcheck: passes correct backwards") {
  Generator gen(1);
  for (MemoryFormat format : test::both_formats()) {
    Tensor x = test::random_tensor({2, 3, 2, 2}, gen, DType::f64, format);
    Tensor w = test::random_tensor({2, 3, 2, 2}, gen, DType::f64, format);
    x.set_requires_grad(true);
    w.set_requires_grad(true);
    B3_CHECK_GRADCHECK(gradcheck([&] { return cube(x, 3.0, 2); }, {x}));
    B3_CHECK_GRADCHECK(gradcheck([&] { return mul(add(x, w), sub(x, w)); }, {x, w}));
    const GradcheckResult r = gradcheck([&] { return mul(x, mul(x, w)); }, {x, w});
    CHECK(r.ok);
    CHECK(r.checked == 2 * 24);
    CHECK(r.skipped_kinks == 0);
    CHECK(r.worst_error < 1e-8);  // central differences in double: ~1e-10 here
    CHECK(r.report.empty());
  }
}

TEST_CASE("gradcheck: fails a wrong backward and says where") {
  Tensor x = f64_leaf({0.5, -1.25, 2.0, 1.5}, {4});
  // 2x instead of 3x^2.
  const GradcheckResult wrong = gradcheck([&] { return cube(x, 2.0, 1); }, {x});
  CHECK_FALSE(wrong.ok);
  CHECK(wrong.checked == 4);
  CHECK(wrong.worst_error > 0.1);
  CHECK(wrong.report.find("tensor 0 [4] element") != std::string::npos);
  CHECK(wrong.report.find("analytic") != std::string::npos);
  // Even a slightly wrong derivative (3.0001 x^2) fails at the default tolerance 1e-6.
  CHECK_FALSE(gradcheck([&] { return cube(x, 3.0001, 2); }, {x}).ok);
  // A backward that forgets one input entirely fails for that input only.
  Tensor w = f64_leaf({1, 2, 3, 4}, {4});
  const GradcheckResult missing = gradcheck(
      [&] {
        Tensor y = mul(x.detach(), w.detach());
        return record_lambda(y, "ForgetsX", {x, w}, [x_saved = x.detach()](const Tensor& g) {
          return std::vector<Tensor>{Tensor(), mul(g, x_saved)};
        });
      },
      {x, w});
  CHECK_FALSE(missing.ok);
  CHECK(missing.report.find("tensor 0") != std::string::npos);
  CHECK(missing.report.find("tensor 1") == std::string::npos);
}

TEST_CASE("gradcheck: counts kinks at relu(0) and not at smooth points") {
  // Two points exactly at the kink, two away from it.
  Tensor x = f64_leaf({0.0, 1.5, 0.0, -2.0}, {4});
  const GradcheckResult r = gradcheck([&] { return relu(x); }, {x});
  CHECK(r.ok);
  CHECK(r.skipped_kinks == 2);
  CHECK(r.checked == 2);
  // x^3 is smooth everywhere, also at 0 where its slope vanishes, and at
  // |x| = 8 where the one-sided slopes differ by |f''| eps = 5e-5 (below the
  // kink threshold 1e-3). Values stay moderate: the rounding noise of the
  // numeric slope grows with |L| (about 1e-10 |L|), see gradcheck.h.
  Tensor s = f64_leaf({0.0, 1e-3, -1e-3, 5.0, -8.0, 3.0}, {6});
  const GradcheckResult smooth = gradcheck([&] { return cube(s, 3.0, 2); }, {s});
  CHECK(smooth.ok);
  CHECK(smooth.skipped_kinks == 0);
  CHECK(smooth.checked == 6);
  const GradcheckResult square = gradcheck([&] { return mul(s, s); }, {s});
  CHECK(square.skipped_kinks == 0);
  CHECK(square.ok);
}

TEST_CASE("gradcheck: max_points_per_tensor limits the points per tensor") {
  Generator gen(2);
  Tensor a = test::random_tensor({50}, gen);
  Tensor b = test::random_tensor({50}, gen);
  Tensor small = test::random_tensor({3}, gen);
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  small.set_requires_grad(true);
  GradcheckOptions options;
  options.max_points_per_tensor = 7;
  const GradcheckResult r = gradcheck([&] { return mul(a, b); }, {a, b}, options);
  CHECK(r.ok);
  CHECK(r.checked + r.skipped_kinks == 14);
  // A tensor smaller than the limit is checked whole.
  const GradcheckResult s = gradcheck([&] { return mul(small, small); }, {small}, options);
  CHECK(s.checked == 3);
  // 0 means every point.
  options.max_points_per_tensor = 0;
  CHECK(gradcheck([&] { return mul(a, b); }, {a, b}, options).checked == 100);
  // The sampled points are still where a wrong backward gets caught.
  options.max_points_per_tensor = 5;
  CHECK_FALSE(gradcheck([&] { return cube(a, 2.0, 1); }, {a}, options).ok);
}

TEST_CASE("gradcheck: gradcheck_module checks the input and every parameter") {
  ScaleShift module;
  module.to(DType::f64);
  const Tensor x = from_doubles({1, 2, 3, -1, -2, -3}, {2, 3}, DType::f64);
  const GradcheckResult r = gradcheck_module(module, x);
  CHECK(r.ok);
  CHECK(r.checked == 3 * 6);  // input, weight and bias
  // In f32 the module is refused.
  ScaleShift f32_module;
  CHECK_THROWS_WITH_AS(gradcheck_module(f32_module, x), doctest::Contains("f64"),
                       std::invalid_argument);
}

TEST_CASE("gradcheck: refuses inputs it cannot check") {
  Tensor f = from_doubles({1, 2}, {2}, DType::f32);
  f.set_requires_grad(true);
  CHECK_THROWS_WITH_AS(gradcheck([&] { return mul(f, f); }, {f}),
                       doctest::Contains("every checked tensor must be f64 on the CPU"),
                       std::invalid_argument);
  Tensor d = from_doubles({1, 2}, {2}, DType::f64);
  CHECK_THROWS_WITH_AS(gradcheck([&] { return mul(d, d); }, {d}),
                       doctest::Contains("does not require grad"), std::invalid_argument);
  // A non-leaf never receives .grad, so checking it would compare against nothing.
  Tensor leaf = f64_leaf({1, 2}, {2});
  Tensor inner = scale(leaf, 2.0);
  CHECK_THROWS_WITH_AS(gradcheck([&] { return mul(inner, inner); }, {inner}),
                       doctest::Contains("must be a leaf"), std::invalid_argument);
}
