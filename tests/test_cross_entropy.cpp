// CrossEntropyLoss: forward and gradient against a double reference, stability
// for logits of +-1000, gradcheck, i32 and i64 targets, error messages, and a
// gradcheck of the whole classifier head (flatten, linear, dropout, loss).
#include <doctest/doctest.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "autograd/gradcheck.h"
#include "layers/activations.h"
#include "layers/dropout.h"
#include "layers/flatten.h"
#include "layers/linear.h"
#include "layers/loss.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

// mean_n(log(sum_c exp z_nc) - z_n[t_n]), naive (fine for |z| of a few units),
// and its gradient (softmax - onehot) / N.
struct Reference {
  double loss = 0;
  std::vector<double> grad;
};

Reference reference_cross_entropy(const Tensor& logits, const std::vector<int64_t>& target) {
  const int64_t batch = logits.size(0), classes = logits.size(1);
  const std::vector<double> z = logits.to_doubles();
  Reference r;
  r.grad.resize(z.size());
  for (int64_t n = 0; n < batch; ++n) {
    double exp_sum = 0;
    for (int64_t c = 0; c < classes; ++c) exp_sum += std::exp(z[n * classes + c]);
    r.loss += (std::log(exp_sum) - z[n * classes + target[n]]) / static_cast<double>(batch);
    for (int64_t c = 0; c < classes; ++c) {
      r.grad[n * classes + c] =
          (std::exp(z[n * classes + c]) / exp_sum - (c == target[n] ? 1.0 : 0.0)) /
          static_cast<double>(batch);
    }
  }
  return r;
}

Tensor as_target(const std::vector<int64_t>& values, DType dtype) {
  return from_doubles(std::vector<double>(values.begin(), values.end()),
                      {static_cast<int64_t>(values.size())}, dtype);
}

struct Sizes {
  int64_t batch, classes;
};
const Sizes kSizes[] = {{1, 10}, {3, 5}, {127, 13}, {4, 1}, {2, 1000}};

}  // namespace

TEST_CASE("cross_entropy: loss and gradient match a double reference") {
  Generator gen(1);
  for (DType dtype : {DType::f32, DType::f64}) {
    for (DType target_dtype : {DType::i64, DType::i32}) {
      for (const Sizes& s : kSizes) {
        CAPTURE(dtype_name(dtype));
        CAPTURE(dtype_name(target_dtype));
        CAPTURE(s.batch);
        CAPTURE(s.classes);
        Tensor logits = test::random_tensor({s.batch, s.classes}, gen, dtype, {}, 3.0);
        logits.set_requires_grad(true);
        std::vector<int64_t> target(static_cast<size_t>(s.batch));
        for (int64_t& t : target) t = static_cast<int64_t>(gen.below(s.classes));
        const Reference r = reference_cross_entropy(logits, target);

        const Tensor loss = cross_entropy(logits, as_target(target, target_dtype));
        CHECK(loss.shape() == Shape{});
        CHECK(loss.dtype() == dtype);
        // The loss is computed in double from the same logits and rounded once
        // to the dtype: f32 costs a relative 6e-8, double ~1e-16 * (classes +
        // batch) of accumulated rounding; 1e-6 and 1e-12 leave room.
        CHECK(test::max_relative_error(loss, {r.loss}) < (dtype == DType::f32 ? 1e-6 : 1e-12));

        loss.backward();
        // Each gradient element is (p - onehot) / N with p rounded to the
        // dtype (f32: 6e-8 relative on values <= 1) before the subtraction.
        CHECK(test::max_relative_error(logits.grad(), r.grad) <
              (dtype == DType::f32 ? 1e-6 : 1e-12));
        double row_sum = 0;  // softmax rows sum to 1, onehot rows to 1: the gradient sums to 0
        for (double g : logits.grad().to_doubles()) row_sum += g;
        CHECK(std::abs(row_sum) < (dtype == DType::f32 ? 1e-5 : 1e-12));
      }
    }
  }
}

TEST_CASE("cross_entropy: stable for logits of +-1000") {
  for (DType dtype : {DType::f32, DType::f64}) {
    CAPTURE(dtype_name(dtype));
    Tensor logits = from_doubles({1000, -1000, 0,       //
                                  -1000, 1000, 1000,    //
                                  1000, -1000, -1000},  //
                                 {3, 3}, dtype);
    logits.set_requires_grad(true);
    const Tensor target = as_target({0, 1, 1}, DType::i64);
    // Row 0: logsumexp = 1000 (+ e^-1000), target 1000 -> 0.
    // Row 1: logsumexp = 1000 + log 2, target 1000 -> log 2.
    // Row 2: logsumexp = 1000, target -1000 -> 2000.
    const double expected = (0.0 + std::log(2.0) + 2000.0) / 3.0;
    const Tensor loss = cross_entropy(logits, target);
    CHECK(std::isfinite(loss.item()));
    // One rounding of a value near 667 to the dtype.
    CHECK(test::max_relative_error(loss, {expected}) < (dtype == DType::f32 ? 1e-7 : 1e-15));
    loss.backward();
    // softmax rows: [1, 0, 0], [0, 1/2, 1/2], [1, 0, 0]; minus onehot; / 3.
    const std::vector<double> expected_grad{0, 0, 0, 0, -0.5 / 3, 0.5 / 3, 1.0 / 3, -1.0 / 3, 0};
    CHECK(test::max_relative_error(logits.grad(), expected_grad) <
          (dtype == DType::f32 ? 1e-7 : 1e-15));
  }
}

TEST_CASE("cross_entropy: gradcheck in double, and the incoming gradient scales it") {
  Generator gen(2);
  const Sizes sizes[] = {{1, 10}, {3, 5}, {5, 13}};
  for (const Sizes& s : sizes) {
    CAPTURE(s.batch);
    CAPTURE(s.classes);
    Tensor logits = test::random_tensor({s.batch, s.classes}, gen, DType::f64, {}, 2.0);
    logits.set_requires_grad(true);
    const Tensor target = randint(s.classes, {s.batch}, gen);
    B3_CHECK_GRADCHECK(gradcheck([&] { return cross_entropy(logits, target); }, {logits}));
  }
  // backward(g) multiplies the gradient by g.
  Tensor logits = test::random_tensor({3, 4}, gen);
  logits.set_requires_grad(true);
  const Tensor target = as_target({0, 3, 2}, DType::i64);
  cross_entropy(logits, target).backward();
  const std::vector<double> unit = logits.grad().to_doubles();
  logits.zero_grad();
  cross_entropy(logits, target).backward(full({}, -2.5, DType::f64));
  std::vector<double> scaled = unit;
  for (double& v : scaled) v *= -2.5;
  CHECK(test::max_relative_error(logits.grad(), scaled) < 1e-15);
}

TEST_CASE("CrossEntropyLoss: the class calls the function") {
  Generator gen(3);
  const Tensor logits = test::random_tensor({4, 6}, gen, DType::f32);
  const Tensor target = as_target({5, 0, 1, 1}, DType::i64);
  CrossEntropyLoss criterion;
  CHECK(criterion.describe() == "CrossEntropyLoss(reduction=mean)");
  CHECK(criterion(logits, target).item() == cross_entropy(logits, target).item());
  CHECK(criterion.forward(logits, target).item() == cross_entropy(logits, target).item());
  CHECK(!criterion(logits, target).requires_grad());
}

TEST_CASE("cross_entropy: bad targets and shapes are refused with clear messages") {
  const Tensor logits = zeros({3, 10});
  CHECK_THROWS_WITH_AS(cross_entropy(logits, as_target({0, 10, 2}, DType::i64)),
                       doctest::Contains("cross_entropy: target[1] = 10 is out of range for 10 "
                                         "classes (valid: 0..9)"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(cross_entropy(logits, as_target({0, 1, -1}, DType::i32)),
                       doctest::Contains("target[2] = -1 is out of range for 10 classes"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(cross_entropy(logits, as_target({-100, 1, 1}, DType::i64)),
                       doctest::Contains("target[0] = -100 is out of range"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(cross_entropy(logits, as_target({0, 1}, DType::i64)),
                       doctest::Contains("target must be [3] to match logits [3, 10], got [2]"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(cross_entropy(logits, zeros({3}, DType::f32)),
                       doctest::Contains("target must hold class indices as i64 or i32, got f32"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(cross_entropy(zeros({3, 10, 1, 1}), as_target({0, 1, 2}, DType::i64)),
                       doctest::Contains("logits must be 2-D [N, classes], got [3, 10, 1, 1]"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(cross_entropy(zeros({0, 10}), zeros({0}, DType::i64)),
                       doctest::Contains("are empty"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(cross_entropy(zeros({3, 10}, DType::i32), as_target({0, 1, 2}, DType::i64)),
                       doctest::Contains("cross_entropy: dtype i32"), std::invalid_argument);
}

TEST_CASE("classifier head: gradcheck through flatten, linear, hardswish, dropout, linear, loss") {
  // MobileNetV3's classifier on pooled channels_last features [N, C, 1, 1]:
  // every parameter's gradient flows through the whole chain.
  Generator gen(4);
  Linear first(13, 8, gen), second(8, 5, gen);
  first.to(DType::f64);
  second.to(DType::f64);
  Flatten flatten_module;
  Generator mask_gen(0);
  Tensor features =
      test::random_tensor({3, 13, 1, 1}, gen, DType::f64, MemoryFormat::channels_last);
  features.set_requires_grad(true);
  const Tensor target = as_target({4, 0, 2}, DType::i64);
  auto head = [&] {
    mask_gen.reseed(11);  // the same dropout mask on every evaluation
    const Tensor hidden = hardswish(first(flatten_module(features)));
    return cross_entropy(second(dropout(hidden, 0.2, true, mask_gen)), target);
  };
  std::vector<Tensor> wrt{features};
  for (const Tensor& p : first.parameters()) wrt.push_back(p);
  for (const Tensor& p : second.parameters()) wrt.push_back(p);
  B3_CHECK_GRADCHECK(gradcheck(head, wrt));
  CHECK(features.grad().shape() == Shape{3, 13, 1, 1});
}
