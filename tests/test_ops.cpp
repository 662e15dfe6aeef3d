// Elementwise add/sub/mul/scale and the reductions sum/mean: forward against
// double loops written here, every operand layout (NCHW, NHWC, transposed,
// narrowed), gradcheck in both memory formats, the residual add
// y = x + f(x), and the errors for mismatched operands.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "layers/activations.h"
#include "tensor/ops.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

struct BinaryCase {
  const char* name;
  std::function<Tensor(const Tensor&, const Tensor&)> op;
  double (*reference)(double, double);
};

const BinaryCase kBinary[] = {
    {"add", add, [](double a, double b) { return a + b; }},
    {"sub", sub, [](double a, double b) { return a - b; }},
    {"mul", mul, [](double a, double b) { return a * b; }},
};

const Shape kShapes[] = {{1, 3, 7, 7}, {3, 5, 1, 1}, {2, 13, 5, 3}, {1, 1, 1, 1}};

std::vector<double> reference_binary(const Tensor& a, const Tensor& b,
                                     double (*f)(double, double)) {
  const std::vector<double> av = a.to_doubles(), bv = b.to_doubles();
  std::vector<double> out(av.size());
  for (size_t i = 0; i < av.size(); ++i) out[i] = f(av[i], bv[i]);
  return out;
}

}  // namespace

TEST_CASE("ops: add, sub, mul match double loops in every pair of formats") {
  Generator gen(1);
  for (const BinaryCase& c : kBinary) {
    for (const Shape& shape : kShapes) {
      for (MemoryFormat fa : test::both_formats()) {
        for (MemoryFormat fb : test::both_formats()) {
          const std::string label = std::string(c.name) + " " + shape_str(shape) + " " +
                                    memory_format_name(fa) + " x " + memory_format_name(fb);
          CAPTURE(label);
          const Tensor a = test::random_tensor(shape, gen, DType::f32, fa);
          const Tensor b = test::random_tensor(shape, gen, DType::f32, fb);
          const Tensor y = c.op(a, b);
          CHECK(y.shape() == shape);
          CHECK(y.dtype() == DType::f32);
          CHECK(y.is_contiguous(fa));  // the first operand's format
          CHECK_FALSE(y.requires_grad());
          // One f32 operation on f32 inputs, rounded once: within 2^-24 relative.
          CHECK(test::max_relative_error(y, reference_binary(a, b, c.reference)) <= 6e-8);
          // In f64 exactly the double result.
          const Tensor ad = a.to(DType::f64), bd = b.to(DType::f64);
          CHECK(c.op(ad, bd).to_doubles() == reference_binary(ad, bd, c.reference));
        }
      }
    }
  }
}

TEST_CASE("ops: operands with other strides: transposed, permuted, narrowed") {
  const auto values = [](int64_t n, double offset) {
    std::vector<double> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      v[static_cast<size_t>(i)] = offset + 0.5 * static_cast<double>(i);
    return v;
  };
  // A transposed (dense, but neither NCHW nor NHWC) first operand with a contiguous second.
  const Tensor base = from_doubles(values(12, 0), {3, 4}, DType::f64);
  const Tensor at = base.transpose(0, 1);  // [4, 3], strides {1, 4}
  const Tensor b = from_doubles(values(12, 100), {4, 3}, DType::f64);
  for (const BinaryCase& c : kBinary) {
    CAPTURE(c.name);
    CHECK(c.op(at, b).to_doubles() == reference_binary(at, b, c.reference));
    CHECK(c.op(b, at).to_doubles() == reference_binary(b, at, c.reference));
    CHECK(c.op(at, at).to_doubles() == reference_binary(at, at, c.reference));
  }
  // 4-D permuted to a dense order that is neither format (N, H, C, W strides).
  const Tensor p4 = from_doubles(values(120, -30), {2, 4, 3, 5}, DType::f64).permute({0, 2, 1, 3});
  const Tensor q4 =
      from_doubles(values(120, 7), {2, 3, 4, 5},
                   TensorOptions(DType::f64).with_format(MemoryFormat::channels_last));
  for (const BinaryCase& c : kBinary) {
    CAPTURE(c.name);
    CHECK(c.op(p4, q4).to_doubles() == reference_binary(p4, q4, c.reference));
    CHECK(c.op(q4, p4).to_doubles() == reference_binary(q4, p4, c.reference));
  }
  // Narrowed (non-dense) operands.
  const Tensor wide = from_doubles(values(40, 1), {4, 10}, DType::f64);
  const Tensor n1 = wide.narrow(1, 2, 5), n2 = wide.narrow(1, 5, 5);
  for (const BinaryCase& c : kBinary) {
    CAPTURE(c.name);
    CHECK(c.op(n1, n2).to_doubles() == reference_binary(n1, n2, c.reference));
  }
  std::vector<double> scaled = n1.to_doubles();
  double n1_total = 0;
  for (double& v : scaled) {
    n1_total += v;  // multiples of 0.5: exact in double
    v *= -2.0;
  }
  CHECK(scale(n1, -2.0).to_doubles() == scaled);
  CHECK(sum(n1).item() == n1_total);
  // The inputs are never modified.
  CHECK(wide.to_doubles() == values(40, 1));
}

TEST_CASE("ops: scale, sum and mean") {
  Generator gen(2);
  for (const Shape& shape : kShapes) {
    for (MemoryFormat format : test::both_formats()) {
      CAPTURE(shape_str(shape));
      const Tensor x = test::random_tensor(shape, gen, DType::f32, format);
      const std::vector<double> xv = x.to_doubles();
      const Tensor s = scale(x, -2.5);
      CHECK(s.is_contiguous(format));
      std::vector<double> expected(xv.size());
      for (size_t i = 0; i < xv.size(); ++i) expected[i] = -2.5 * xv[i];
      CHECK(test::max_relative_error(s, expected) <= 6e-8);  // one f32 rounding

      double total = 0;
      for (double v : xv) total += v;
      const Tensor t = sum(x);
      CHECK(t.shape() == Shape{});
      CHECK(t.dtype() == DType::f32);
      // sum accumulates in double and rounds once to f32.
      CHECK(t.item() == static_cast<double>(static_cast<float>(total)));
      const Tensor m = mean(x);
      CHECK(m.shape() == Shape{});
      // mean = f32(sum) scaled by 1/n in f32: two roundings.
      CHECK(std::abs(m.item() - total / static_cast<double>(xv.size())) <=
            1.2e-7 * std::max(1.0, std::abs(total / static_cast<double>(xv.size()))));
    }
  }
  // f64 sums are exact for these integers.
  CHECK(sum(from_doubles({1, 2, 3, 4}, {2, 2}, DType::f64)).item() == 10.0);
  CHECK(mean(from_doubles({1, 2, 3, 4}, {2, 2}, DType::f64)).item() == 2.5);
  CHECK(sum(zeros({0, 3})).item() == 0.0);
  CHECK_THROWS_WITH_AS(mean(zeros({0, 3})), doctest::Contains("mean: the tensor has no elements"),
                       std::invalid_argument);
}

TEST_CASE("ops: gradcheck of every op in both formats") {
  Generator gen(3);
  for (const Shape& shape : {Shape{1, 3, 1, 1}, Shape{2, 5, 3, 3}, Shape{3, 2, 1, 5}}) {
    for (MemoryFormat fa : test::both_formats()) {
      for (MemoryFormat fb : test::both_formats()) {
        const std::string label =
            shape_str(shape) + " " + memory_format_name(fa) + " x " + memory_format_name(fb);
        CAPTURE(label);
        Tensor a = test::random_tensor(shape, gen, DType::f64, fa);
        Tensor b = test::random_tensor(shape, gen, DType::f64, fb);
        a.set_requires_grad(true);
        b.set_requires_grad(true);
        for (const BinaryCase& c : kBinary) {
          CAPTURE(c.name);
          B3_CHECK_GRADCHECK(gradcheck([&] { return c.op(a, b); }, {a, b}));
        }
        B3_CHECK_GRADCHECK(gradcheck([&] { return scale(a, -1.75); }, {a}));
        B3_CHECK_GRADCHECK(gradcheck([&] { return sum(mul(a, b)); }, {a, b}));
        B3_CHECK_GRADCHECK(gradcheck([&] { return mean(mul(a, a)); }, {a}));
        // The same tensor as both operands: the two gradients add.
        B3_CHECK_GRADCHECK(gradcheck([&] { return mul(a, a); }, {a}));
        // Gradients come back in each leaf's own format.
        a.zero_grad();
        b.zero_grad();
        sum(mul(a, b)).backward();
        CHECK(a.grad().suggest_memory_format() == a.suggest_memory_format());
        CHECK(b.grad().suggest_memory_format() == b.suggest_memory_format());
      }
    }
  }
}

TEST_CASE("ops: residual add y = x + f(x) passes gradient through both paths") {
  Generator gen(4);
  for (MemoryFormat format : test::both_formats()) {
    for (const Shape& shape : {Shape{1, 3, 1, 1}, Shape{3, 5, 7, 7}, Shape{2, 13, 3, 5}}) {
      CAPTURE(shape_str(shape));
      Tensor x = test::random_tensor(shape, gen, DType::f64, format);
      Tensor w = test::random_tensor(shape, gen, DType::f64, format);
      x.set_requires_grad(true);
      w.set_requires_grad(true);
      GradcheckOptions options;
      options.max_points_per_tensor = 60;  // keeps the 7x7 case fast
      B3_CHECK_GRADCHECK(gradcheck([&] { return add(x, mul(hardswish(x), w)); }, {x, w}, options));
      // Exact gradient of sum(x + x * w): 1 + w for x, x for w.
      x.zero_grad();
      w.zero_grad();
      const Tensor y = add(x, mul(x, w));
      CHECK(y.is_contiguous(format));
      sum(y).backward();
      std::vector<double> expected_x = w.to_doubles();
      for (double& v : expected_x) v += 1;
      CHECK(x.grad().to_doubles() == expected_x);
      CHECK(w.grad().to_doubles() == x.to_doubles());
    }
  }
}

TEST_CASE("ops: mismatched or unsupported operands are refused by name") {
  CHECK_THROWS_WITH_AS(add(zeros({2, 3}), zeros({3, 2})),
                       doctest::Contains("add: shapes [2, 3] and [3, 2] differ"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(sub(zeros({2}), zeros({2}, DType::f64)),
                       doctest::Contains("sub: dtypes f32 and f64 differ"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(mul(zeros({2}, DType::i32), zeros({2}, DType::i32)),
                       doctest::Contains("mul: dtype i32"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(add(zeros({2}, DType::f16), zeros({2}, DType::f16)),
                       doctest::Contains("add: dtype f16"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(sum(zeros({2}, DType::u8)), doctest::Contains("sum: dtype u8"),
                       std::invalid_argument);
  CHECK_THROWS_AS(scale(zeros({2}, DType::i64), 2.0), std::invalid_argument);
  // align_layout hands back b itself when the layouts already agree, else a copy in a's strides.
  const Tensor a =
      zeros({2, 3, 4, 5}, TensorOptions(DType::f32).with_format(MemoryFormat::channels_last));
  const Tensor same =
      zeros({2, 3, 4, 5}, TensorOptions(DType::f32).with_format(MemoryFormat::channels_last));
  CHECK(align_layout(same, a).is_same(same));
  const Tensor other = from_doubles(std::vector<double>(120, 1.5), {2, 3, 4, 5});
  const Tensor aligned = align_layout(other, a);
  CHECK(aligned.strides() == a.strides());
  CHECK(aligned.to_doubles() == other.to_doubles());
  const Tensor t = zeros({3, 4}).transpose(0, 1);
  CHECK(align_layout(zeros({4, 3}), t).strides() == t.strides());
  // A non-dense a cannot lend its strides to a fresh block: b comes back dense.
  const Tensor narrowed = zeros({4, 10}).narrow(1, 0, 5);
  const Tensor dense = align_layout(full({4, 5}, 2.0), narrowed);
  CHECK(dense.is_contiguous());
  CHECK(dense.to_doubles() == std::vector<double>(20, 2.0));
}
