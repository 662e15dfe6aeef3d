// Linear: forward against a naive double reference with a per-element
// rounding bound, gradcheck w.r.t. input, weight and bias, PyTorch's default
// initialization, non-contiguous operands, awkward sizes, error messages.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "autograd/gradcheck.h"
#include "layers/linear.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

struct Sizes {
  int64_t batch, in, out;
};

// Batch 1, 3, 127; feature counts that are not multiples of 8 (5, 13) and 1.
const Sizes kSizes[] = {{1, 5, 13}, {3, 13, 5}, {127, 13, 10}, {2, 1, 1}, {3, 16, 8}};

// y[n][o] = sum_i x[n][i] w[o][i] + b[o] in double, and the rounding bound
// gamma * (sum_i |x w| + |b|) of a dtype with unit roundoff u, gamma = (in + 2) u
// (Higham's bound for a length-in dot product plus the bias add).
struct Reference {
  std::vector<double> values;
  std::vector<double> bounds;
};

Reference reference_linear(const Tensor& x, const Tensor& w, const Tensor& b,
                           double unit_roundoff) {
  const int64_t batch = x.size(0), in = x.size(1), out = w.size(0);
  const std::vector<double> xv = x.to_doubles(), wv = w.to_doubles();
  const std::vector<double> bv = b.defined() ? b.to_doubles() : std::vector<double>(out, 0.0);
  const double gamma = static_cast<double>(in + 2) * unit_roundoff;
  Reference r;
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t o = 0; o < out; ++o) {
      double sum = bv[o], magnitude = std::abs(bv[o]);
      for (int64_t i = 0; i < in; ++i) {
        sum += xv[n * in + i] * wv[o * in + i];
        magnitude += std::abs(xv[n * in + i] * wv[o * in + i]);
      }
      r.values.push_back(sum);
      r.bounds.push_back(gamma * magnitude);
    }
  }
  return r;
}

// Every element within its own rounding bound (plus the double reference's
// own error, ~1e-16 relative, far below).
void check_within_bounds(const Tensor& y, const Reference& r) {
  const std::vector<double> values = y.to_doubles();
  REQUIRE(values.size() == r.values.size());
  int failures = 0;
  for (size_t k = 0; k < values.size(); ++k) {
    const double error = std::abs(values[k] - r.values[k]);
    if (!(error <= r.bounds[k] + 1e-300) && failures++ < 5) {
      FAIL_CHECK("element " << k << ": " << values[k] << " vs " << r.values[k] << ", error "
                            << error << " > bound " << r.bounds[k]);
    }
  }
  CHECK(failures == 0);
}

double unit_roundoff(DType dtype) {
  return dtype == DType::f32 ? std::numeric_limits<float>::epsilon() / 2
                             : std::numeric_limits<double>::epsilon() / 2;
}

}  // namespace

TEST_CASE("linear: forward matches a double reference within the rounding bound") {
  Generator gen(1);
  for (DType dtype : {DType::f32, DType::f64}) {
    for (const Sizes& s : kSizes) {
      for (bool with_bias : {true, false}) {
        CAPTURE(dtype_name(dtype));
        CAPTURE(s.batch);
        CAPTURE(s.in);
        CAPTURE(s.out);
        CAPTURE(with_bias);
        const Tensor x = test::random_tensor({s.batch, s.in}, gen, dtype);
        const Tensor w = test::random_tensor({s.out, s.in}, gen, dtype);
        const Tensor b = with_bias ? test::random_tensor({s.out}, gen, dtype) : Tensor();
        const Tensor y = linear(x, w, b);
        CHECK(y.shape() == Shape{s.batch, s.out});
        CHECK(y.dtype() == dtype);
        check_within_bounds(y, reference_linear(x, w, b, unit_roundoff(dtype)));
      }
    }
  }
}

TEST_CASE("linear: non-contiguous input and weight give the same result") {
  Generator gen(2);
  // x as the transpose of an [in, N] tensor, W as the transpose of [in, out].
  const Tensor x_t = test::random_tensor({13, 3}, gen, DType::f64);
  const Tensor w_t = test::random_tensor({13, 5}, gen, DType::f64);
  const Tensor b = test::random_tensor({5}, gen, DType::f64);
  const Tensor x = x_t.transpose(0, 1), w = w_t.transpose(0, 1);
  REQUIRE(!x.is_contiguous());
  const Tensor y = linear(x, w, b);
  const Tensor expected = linear(x.contiguous(), w.contiguous(), b);
  // The same products summed by the same GEMM: equal up to a few double ulps.
  CHECK(test::max_relative_error(y, expected) < 1e-14);
}

TEST_CASE("linear: gradcheck in double w.r.t. input, weight and bias") {
  Generator gen(3);
  const Sizes sizes[] = {{1, 5, 3}, {3, 13, 5}, {2, 1, 1}};
  for (const Sizes& s : sizes) {
    for (bool with_bias : {true, false}) {
      CAPTURE(s.batch);
      CAPTURE(s.in);
      CAPTURE(s.out);
      CAPTURE(with_bias);
      Tensor x = test::random_tensor({s.batch, s.in}, gen);
      Tensor w = test::random_tensor({s.out, s.in}, gen);
      Tensor b = with_bias ? test::random_tensor({s.out}, gen) : Tensor();
      x.set_requires_grad(true);
      w.set_requires_grad(true);
      std::vector<Tensor> wrt{x, w};
      if (with_bias) {
        b.set_requires_grad(true);
        wrt.push_back(b);
      }
      B3_CHECK_GRADCHECK(gradcheck([&] { return linear(x, w, b); }, wrt));
    }
  }
}

TEST_CASE("linear: the backward equals g W, g^T x and column sums of g") {
  // Small integers: every product and sum is exact in double.
  Tensor x = from_doubles({1, 2, 3, -1, 0, 2}, {2, 3}, DType::f64);
  Tensor w = from_doubles({1, 0, -1, 2, 1, 0}, {2, 3}, DType::f64);
  Tensor b = from_doubles({5, -5}, {2}, DType::f64);
  for (Tensor* t : {&x, &w, &b}) t->set_requires_grad(true);
  const Tensor y = linear(x, w, b);
  // y = [[1 - 3 + 5, 2 + 2 - 5], [-1 - 2 + 5, -2 + 0 - 5]]
  CHECK(test::max_relative_error(y, std::vector<double>{3, -1, 2, -7}) == 0.0);
  const Tensor g = from_doubles({1, 2, 3, 4}, {2, 2}, DType::f64);
  y.backward(g);
  // g W = [[1 + 4, 2, -1], [3 + 8, 4, -3]]
  CHECK(test::max_relative_error(x.grad(), std::vector<double>{5, 2, -1, 11, 4, -3}) == 0.0);
  // g^T x = [[1 - 3, 2, 3 + 6], [2 - 4, 4, 6 + 8]]
  CHECK(test::max_relative_error(w.grad(), std::vector<double>{-2, 2, 9, -2, 4, 14}) == 0.0);
  CHECK(test::max_relative_error(b.grad(), std::vector<double>{4, 6}) == 0.0);
}

TEST_CASE("linear: only the inputs that require grad receive one") {
  Generator gen(4);
  Tensor x = test::random_tensor({3, 5}, gen);
  Tensor w = test::random_tensor({2, 5}, gen);
  Tensor b = test::random_tensor({2}, gen);
  w.set_requires_grad(true);  // x and b are constants here
  linear(x, w, b).backward(ones({3, 2}, DType::f64));
  CHECK(w.grad().defined());
  CHECK(!x.grad().defined());
  CHECK(!b.grad().defined());
  CHECK(!linear(x, w.detach(), b).requires_grad());
}

TEST_CASE("Linear module: PyTorch's default init, parameter names, gradcheck") {
  Generator gen(5);
  Linear layer(13, 10, gen);
  CHECK(layer.describe() == "Linear(13, 10)");
  const auto named = layer.named_parameters();
  REQUIRE(named.size() == 2);
  CHECK(named[0].first == "weight");
  CHECK(named[1].first == "bias");
  CHECK(layer.weight.shape() == Shape{10, 13});
  CHECK(layer.bias.shape() == Shape{10});
  CHECK(layer.parameter_count() == 13 * 10 + 10);

  // U(-1/sqrt(in), 1/sqrt(in)) for both: all inside the bound, and with 130
  // draws the extremes come within 10% of it (a miss has probability
  // (0.95)^130 ~ 1e-3 per side for a correct uniform; the seed is fixed).
  const double bound = 1.0 / std::sqrt(13.0);
  const std::vector<double> w = layer.weight.to_doubles();
  double lowest = 0, highest = 0;
  for (double v : w) {
    lowest = std::min(lowest, v);
    highest = std::max(highest, v);
  }
  CHECK(lowest >= -bound);
  CHECK(highest <= bound);
  CHECK(lowest < -0.9 * bound);
  CHECK(highest > 0.9 * bound);
  for (double v : layer.bias.to_doubles()) CHECK(std::abs(v) <= bound);

  // The same seed draws the same parameters.
  Generator same(5);
  Linear twin(13, 10, true, same);
  CHECK(test::max_relative_error(twin.weight, layer.weight) == 0.0);
  CHECK(test::max_relative_error(twin.bias, layer.bias) == 0.0);

  Linear no_bias(7, 3, false, gen);
  CHECK(no_bias.parameters().size() == 1);
  CHECK(!no_bias.bias.defined());
  CHECK(no_bias.describe() == "Linear(7, 3, no bias)");

  layer.to(DType::f64);
  Generator data(6);
  B3_CHECK_GRADCHECK(gradcheck_module(layer, test::random_tensor({3, 13}, data)));
  no_bias.to(DType::f64);
  B3_CHECK_GRADCHECK(gradcheck_module(no_bias, test::random_tensor({1, 7}, data)));
}

TEST_CASE("linear: wrong shapes and dtypes are refused with clear messages") {
  Generator gen(7);
  const Tensor w = test::random_tensor({16, 16}, gen, DType::f32);
  const Tensor b = test::random_tensor({16}, gen, DType::f32);
  CHECK_THROWS_WITH_AS(linear(zeros({4, 7}), w, b),
                       doctest::Contains("linear: input has 7 features, weight expects 16"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(linear(zeros({4, 16, 1, 1}), w, b),
                       doctest::Contains("input must be 2-D [N, in_features], got [4, 16, 1, 1]"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(linear(zeros({4, 16}), zeros({16}), b),
                       doctest::Contains("linear: weight must be 2-D"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(linear(zeros({4, 16}), w, zeros({15})),
                       doctest::Contains("linear: bias must be [16]"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(linear(zeros({4, 16}, DType::f64), w, b),
                       doctest::Contains("linear: dtypes differ: input f64, weight f32"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(linear(zeros({4, 16}, DType::i32), zeros({16, 16}, DType::i32)),
                       doctest::Contains("linear: dtype i32"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(Linear(0, 3, gen), doctest::Contains("Linear: in_features and out_features"),
                       std::invalid_argument);
}
