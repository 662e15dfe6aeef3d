// Dropout: the zero fraction against the binomial law, exact scaling of the
// kept values, reproducibility from the seed, eval/p=0 identity, p=1, the
// gradient with a fixed mask, both memory formats, error messages.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "autograd/gradcheck.h"
#include "layers/dropout.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

int64_t count_zeros(const Tensor& t) {
  int64_t zeros_found = 0;
  for (double v : t.to_doubles()) zeros_found += v == 0.0;
  return zeros_found;
}

}  // namespace

TEST_CASE("dropout: the fraction of zeros follows Binomial(n, p)") {
  // 200,000 elements, each zeroed independently with probability p: the zero
  // count Z has mean n p and sigma sqrt(n p (1 - p)) (at most 224 here). We
  // require |Z - n p| < 5 sigma, which a correct sampler misses with
  // probability ~6e-7; an off-by-something p (say 0.51 for 0.5, 2000 more
  // zeros = 9 sigma) fails. Inputs are ones, so a zero means dropped.
  const Shape shape{8, 25, 40, 25};
  const double n = 200000.0;
  for (double p : {0.1, 0.2, 0.5, 0.8}) {
    for (MemoryFormat format : test::both_formats()) {
      CAPTURE(p);
      CAPTURE(memory_format_name(format));
      Generator gen(static_cast<uint64_t>(p * 1000));
      const Tensor x = ones(shape, TensorOptions(DType::f32).with_format(format));
      const Tensor y = dropout(x, p, true, gen);
      const double sigma = std::sqrt(n * p * (1 - p));
      const double zeros_found = static_cast<double>(count_zeros(y));
      CHECK(std::abs(zeros_found - n * p) < 5 * sigma);
    }
  }
}

TEST_CASE("dropout: kept values are scaled by exactly 1/(1-p), dropped are exactly 0") {
  Generator gen(1);
  for (DType dtype : {DType::f32, DType::f64}) {
    for (double p : {0.2, 0.5, 0.7}) {
      CAPTURE(dtype_name(dtype));
      CAPTURE(p);
      const Tensor x = test::random_tensor({127, 13}, gen, dtype);
      const Tensor y = dropout(x, p, true, gen);
      CHECK(y.shape() == x.shape());
      CHECK(y.dtype() == dtype);
      // x * scale with the scale rounded to the dtype, as PyTorch's
      // input * mask * (1 / (1 - p)) computes it: bit-for-bit equal.
      const double scale =
          dtype == DType::f32 ? static_cast<float>(1.0 / (1.0 - p)) : 1.0 / (1.0 - p);
      const std::vector<double> xs = x.to_doubles(), ys = y.to_doubles();
      int64_t kept = 0, wrong = 0;
      for (size_t i = 0; i < xs.size(); ++i) {
        if (ys[i] == 0.0) continue;
        ++kept;
        const double expected =
            dtype == DType::f32
                ? static_cast<double>(static_cast<float>(xs[i]) * static_cast<float>(scale))
                : xs[i] * scale;
        wrong += ys[i] != expected;
      }
      CHECK(wrong == 0);
      CHECK(kept > 0);
      CHECK(kept < static_cast<int64_t>(xs.size()));
    }
  }
}

TEST_CASE("dropout: the same seed draws the same mask, in either memory format") {
  Generator data(2);
  const Tensor x = test::random_tensor({3, 13, 7, 5}, data, DType::f32);
  const Tensor x_last = x.contiguous(MemoryFormat::channels_last);
  Generator a(42), b(42), c(43);
  const Tensor ya = dropout(x, 0.5, true, a);
  const Tensor yb = dropout(x, 0.5, true, b);
  const Tensor yc = dropout(x, 0.5, true, c);
  CHECK(ya.to_doubles() == yb.to_doubles());
  CHECK(ya.to_doubles() != yc.to_doubles());
  // A second draw from the same generator is a new mask.
  CHECK(dropout(x, 0.5, true, a).to_doubles() != ya.to_doubles());

  // The mask is drawn in logical order: NHWC input, same seed, same values;
  // and the output keeps the input's format.
  Generator d(42);
  const Tensor y_last = dropout(x_last, 0.5, true, d);
  CHECK(y_last.suggest_memory_format() == MemoryFormat::channels_last);
  CHECK(y_last.is_contiguous(MemoryFormat::channels_last));
  CHECK(ya.suggest_memory_format() == MemoryFormat::contiguous);
  CHECK(y_last.to_doubles() == ya.to_doubles());

  // A transposed (dense, non-standard strides) input: the same logical mask too.
  Generator e(42), f(42);
  const Tensor m = test::random_tensor({13, 9}, data, DType::f64).transpose(0, 1);
  CHECK(dropout(m, 0.3, true, e).to_doubles() ==
        dropout(m.contiguous(), 0.3, true, f).to_doubles());
}

TEST_CASE("dropout: eval mode and p = 0 return the input, p = 1 gives zeros") {
  Generator gen(3);
  Tensor x = test::random_tensor({2, 5, 3, 3}, gen, DType::f64);
  x.set_requires_grad(true);
  CHECK(dropout(x, 0.5, false, gen).is_same(x));
  CHECK(dropout(x, 0.0, true, gen).is_same(x));
  CHECK(dropout(x, 1.0, false, gen).is_same(x));

  const Tensor y = dropout(x, 1.0, true, gen);
  CHECK(count_zeros(y) == x.numel());
  y.backward(ones(y.shape(), DType::f64));
  CHECK(count_zeros(x.grad()) == x.numel());  // finite zeros, not 0 * inf = NaN
}

TEST_CASE("dropout: gradient is g * mask / (1 - p), gradcheck with a fixed mask") {
  Generator data(4);
  const Shape shapes[] = {{1, 3, 7, 7}, {3, 5, 1, 1}, {3, 13}};
  for (const Shape& shape : shapes) {
    for (MemoryFormat format : test::both_formats()) {
      if (format == MemoryFormat::channels_last && shape.size() != 4) continue;
      CAPTURE(shape_str(shape));
      CAPTURE(memory_format_name(format));
      Tensor x = test::random_tensor(shape, data, DType::f64, format);
      x.set_requires_grad(true);
      Generator gen(0);
      // Reseeded on every call, so each of gradcheck's evaluations draws the same mask.
      B3_CHECK_GRADCHECK(gradcheck(
          [&] {
            gen.reseed(7);
            return dropout(x, 0.3, true, gen);
          },
          {x}));

      // Exactly: with g = ones the gradient is the scale where kept, 0 where dropped.
      x.zero_grad();
      gen.reseed(7);
      const Tensor y = dropout(x, 0.3, true, gen);
      CHECK(y.suggest_memory_format() == x.suggest_memory_format());
      y.backward(ones(shape, DType::f64));
      const std::vector<double> ys = y.to_doubles(), gs = x.grad().to_doubles();
      int64_t wrong = 0;
      for (size_t i = 0; i < ys.size(); ++i) wrong += gs[i] != (ys[i] == 0.0 ? 0.0 : 1.0 / 0.7);
      CHECK(wrong == 0);
    }
  }
}

TEST_CASE("Dropout module: owns a seeded generator, active only in training") {
  Generator data(5);
  const Tensor x = test::random_tensor({4, 20}, data, DType::f32);
  Dropout first(0.2, 9), second(0.2, 9);
  CHECK(first.describe() == "Dropout(p=0.2)");
  CHECK(first.p() == 0.2);
  CHECK(first.parameters().empty());
  const Tensor y1 = first(x);
  CHECK(y1.to_doubles() == second(x).to_doubles());  // same seed, same sequence
  CHECK(first(x).to_doubles() != y1.to_doubles());   // the generator moves on
  Generator reference(9);
  CHECK(dropout(x, 0.2, true, reference).to_doubles() == y1.to_doubles());

  first.eval();
  CHECK(first(x).is_same(x));
  first.train();
  CHECK(!first(x).is_same(x));
  first.generator().reseed(9);
  CHECK(first(x).to_doubles() == y1.to_doubles());
}

TEST_CASE("dropout: p outside [0, 1] and bad inputs are refused") {
  Generator gen(6);
  const Tensor x = zeros({2, 3});
  CHECK_THROWS_WITH_AS(dropout(x, 1.5, true, gen),
                       doctest::Contains("dropout: probability p must be in [0, 1], got 1.5"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(dropout(x, -0.1, false, gen), doctest::Contains("got -0.1"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(dropout(x, std::numeric_limits<double>::quiet_NaN(), true, gen),
                       doctest::Contains("dropout: probability p must be in [0, 1]"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(Dropout(2.0), doctest::Contains("Dropout: probability p must be in [0, 1]"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(dropout(zeros({2, 3}, DType::i64), 0.5, true, gen),
                       doctest::Contains("dropout: dtype i64"), std::invalid_argument);
}
