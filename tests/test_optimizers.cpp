// SGD, Adam and AdamW: several steps against the update formulas written out
// here on plain doubles, state save/restore, argument checks.
#include <doctest/doctest.h>

#include <cmath>

#include "optim/adam.h"
#include "optim/sgd.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

// A parameter and a sequence of gradients to feed it, step by step.
struct Problem {
  std::vector<double> initial{0.5, -1.25, 2.0, 0.0, -0.75};
  std::vector<std::vector<double>> grads{{0.1, -0.2, 0.3, 0.0, 1.5},
                                         {-0.4, 0.25, 0.05, 0.7, -1.0},
                                         {0.2, 0.2, -0.6, -0.1, 0.3},
                                         {1.0, -1.0, 0.5, 0.25, -0.125}};
};

Tensor make_parameter(const std::vector<double>& values, DType dtype) {
  Tensor p = from_doubles(values, {static_cast<int64_t>(values.size())}, dtype);
  p.set_requires_grad(true);
  return p;
}

void run_steps(Optimizer& optimizer, Tensor& p, const Problem& problem, DType dtype) {
  for (const auto& g : problem.grads) {
    p.set_grad(from_doubles(g, p.shape(), dtype));
    optimizer.step();
  }
}

// torch.optim.SGD, element by element.
std::vector<double> expected_sgd(const Problem& pr, const SgdOptions& o) {
  std::vector<double> p = pr.initial, buf(p.size(), 0.0);
  for (size_t t = 0; t < pr.grads.size(); ++t) {
    for (size_t i = 0; i < p.size(); ++i) {
      double d = pr.grads[t][i] + o.weight_decay * p[i];
      if (o.momentum != 0.0) {
        buf[i] = t == 0 ? d : o.momentum * buf[i] + (1.0 - o.dampening) * d;
        d = o.nesterov ? d + o.momentum * buf[i] : buf[i];
      }
      p[i] -= o.lr * d;
    }
  }
  return p;
}

// torch.optim.Adam / AdamW, element by element.
std::vector<double> expected_adam(const Problem& pr, const AdamOptions& o, bool decoupled) {
  std::vector<double> p = pr.initial, m(p.size(), 0.0), v(p.size(), 0.0);
  for (size_t t = 1; t <= pr.grads.size(); ++t) {
    for (size_t i = 0; i < p.size(); ++i) {
      if (decoupled) p[i] *= 1.0 - o.lr * o.weight_decay;
      const double g = pr.grads[t - 1][i] + (decoupled ? 0.0 : o.weight_decay * p[i]);
      m[i] = o.beta1 * m[i] + (1.0 - o.beta1) * g;
      v[i] = o.beta2 * v[i] + (1.0 - o.beta2) * g * g;
      const double mhat_scale = o.lr / (1.0 - std::pow(o.beta1, static_cast<double>(t)));
      const double denom =
          std::sqrt(v[i]) / std::sqrt(1.0 - std::pow(o.beta2, static_cast<double>(t))) + o.eps;
      p[i] -= mhat_scale * m[i] / denom;
    }
  }
  return p;
}

}  // namespace

TEST_CASE("SGD: plain, momentum, dampening, nesterov, weight decay match the formulas") {
  const Problem problem;
  std::vector<SgdOptions> variants(5);
  variants[0].lr = 0.1;
  variants[1] = {0.1, 0.9, 0.0, 0.0, false};
  variants[2] = {0.05, 0.9, 0.3, 0.0, false};
  variants[3] = {0.1, 0.9, 0.0, 1e-2, true};
  variants[4] = {0.2, 0.5, 0.0, 5e-2, false};
  for (const SgdOptions& o : variants) {
    CAPTURE(o.momentum);
    CAPTURE(o.nesterov);
    for (DType dtype : {DType::f64, DType::f32}) {
      Tensor p = make_parameter(problem.initial, dtype);
      Sgd sgd({p}, o);
      run_steps(sgd, p, problem, dtype);
      // f64 runs the same operations in the same order: equal to rounding (1e-14).
      // f32: 4 steps of a few roundings each on values of order 1: below 1e-6.
      CHECK(test::max_relative_error(p, expected_sgd(problem, o)) <
            (dtype == DType::f64 ? 1e-14 : 1e-6));
    }
  }
}

TEST_CASE("Adam and AdamW match the formulas, with and without weight decay") {
  const Problem problem;
  for (bool decoupled : {false, true}) {
    for (double wd : {0.0, 0.1}) {
      CAPTURE(decoupled);
      CAPTURE(wd);
      AdamOptions o;
      o.lr = 0.01;
      o.weight_decay = wd;
      for (DType dtype : {DType::f64, DType::f32}) {
        Tensor p = make_parameter(problem.initial, dtype);
        std::unique_ptr<Optimizer> opt;
        if (decoupled)
          opt = std::make_unique<AdamW>(std::vector<Tensor>{p}, o);
        else
          opt = std::make_unique<Adam>(std::vector<Tensor>{p}, o);
        run_steps(*opt, p, problem, dtype);
        // As for SGD: identical operation order in f64; f32 rounding below 1e-6.
        CHECK(test::max_relative_error(p, expected_adam(problem, o, decoupled)) <
              (dtype == DType::f64 ? 1e-14 : 1e-6));
      }
    }
  }
}

TEST_CASE("optimizers skip parameters without a gradient and zero_grad drops gradients") {
  Tensor a = make_parameter({1.0, 2.0}, DType::f64);
  Tensor b = make_parameter({3.0, 4.0}, DType::f64);
  Adam adam({a, b}, AdamOptions{});
  a.set_grad(from_doubles({1.0, 1.0}, {2}, DType::f64));
  adam.step();
  // Step 1 with g = 1: m_hat = 1, v_hat = 1, so p -= lr / (1 + eps), exactly
  // as Adam's formula; the 1e-15 relative slack covers the f64 roundings of
  // the bias corrections and the division.
  const double expected_first = 1.0 - 1e-3 / (1.0 + 1e-8);
  CHECK(a.item_at({0}) == doctest::Approx(expected_first).epsilon(1e-15));
  CHECK(a.item_at({1}) == doctest::Approx(2.0 - 1e-3 / (1.0 + 1e-8)).epsilon(1e-15));
  CHECK(b.item_at({0}) == 3.0);          // untouched: no gradient
  CHECK(adam.state_dict().size() == 3);  // state only for a
  adam.zero_grad();
  CHECK_FALSE(a.grad().defined());
}

TEST_CASE("optimizer state round-trips: a restored optimizer continues identically") {
  const Problem problem;
  AdamOptions o;
  o.lr = 0.05;
  Tensor p1 = make_parameter(problem.initial, DType::f64);
  Adam first({p1}, o);
  p1.set_grad(from_doubles(problem.grads[0], p1.shape(), DType::f64));
  first.step();

  // A second optimizer over a copy of the parameter, restored from the first.
  Tensor p2 = make_parameter(p1.to_doubles(), DType::f64);
  Adam second({p2}, o);
  second.load_state_dict(first.state_dict());
  for (size_t t = 1; t < problem.grads.size(); ++t) {
    p1.set_grad(from_doubles(problem.grads[t], p1.shape(), DType::f64));
    p2.set_grad(from_doubles(problem.grads[t], p2.shape(), DType::f64));
    first.step();
    second.step();
  }
  CHECK(test::max_relative_error(p2, p1) == 0.0);
  CHECK(second.state_dict()[0].first == "state.0.step");
  CHECK(second.state_dict()[0].second.item() == 4.0);

  // SGD momentum state, too.
  SgdOptions so{0.1, 0.9, 0.0, 0.0, false};
  Tensor q1 = make_parameter(problem.initial, DType::f64);
  Sgd sgd1({q1}, so);
  q1.set_grad(from_doubles(problem.grads[0], q1.shape(), DType::f64));
  sgd1.step();
  Tensor q2 = make_parameter(q1.to_doubles(), DType::f64);
  Sgd sgd2({q2}, so);
  sgd2.load_state_dict(sgd1.state_dict());
  q1.set_grad(from_doubles(problem.grads[1], q1.shape(), DType::f64));
  q2.set_grad(from_doubles(problem.grads[1], q2.shape(), DType::f64));
  sgd1.step();
  sgd2.step();
  CHECK(test::max_relative_error(q2, q1) == 0.0);
}

TEST_CASE("optimizer state with the wrong shape or kind is refused") {
  Tensor p = make_parameter({1.0, 2.0, 3.0}, DType::f64);
  Tensor other = make_parameter({1.0, 2.0}, DType::f64);
  Adam a({p}, AdamOptions{});
  Adam b({other}, AdamOptions{});
  other.set_grad(from_doubles({1.0, 1.0}, {2}, DType::f64));
  b.step();
  CHECK_THROWS_WITH_AS(a.load_state_dict(b.state_dict()), doctest::Contains("state.0.exp_avg"),
                       std::invalid_argument);
  Sgd s({p}, SgdOptions{0.1, 0.9, 0.0, 0.0, false});
  p.set_grad(from_doubles({1.0, 1.0, 1.0}, {3}, DType::f64));
  Adam c({p}, AdamOptions{});
  c.step();
  CHECK_THROWS_WITH_AS(s.load_state_dict(c.state_dict()), doctest::Contains("SGD: load_state_dict"),
                       std::invalid_argument);
}

TEST_CASE("optimizer arguments are checked") {
  Tensor p = make_parameter({1.0}, DType::f64);
  CHECK_THROWS_WITH_AS(Sgd({p}, SgdOptions{-1.0}), doctest::Contains("learning rate"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(Sgd({p}, SgdOptions{0.1, 0.0, 0.0, 0.0, true}),
                       doctest::Contains("nesterov"), std::invalid_argument);
  AdamOptions bad;
  bad.beta1 = 1.0;
  CHECK_THROWS_WITH_AS(Adam({p}, bad), doctest::Contains("beta1"), std::invalid_argument);
  // Each of Adam's settings is checked and named, in Adam and AdamW alike.
  const auto refused = [&](AdamOptions o, const char* name) {
    CAPTURE(name);
    CHECK_THROWS_WITH_AS(Adam({p}, o), doctest::Contains(name), std::invalid_argument);
    CHECK_THROWS_WITH_AS(AdamW({p}, o), doctest::Contains(name), std::invalid_argument);
  };
  AdamOptions o;
  o.beta2 = 1.0;
  refused(o, "beta2");
  o = AdamOptions{};
  o.beta2 = -0.1;
  refused(o, "beta2");
  o = AdamOptions{};
  o.beta1 = -0.5;
  refused(o, "beta1");
  o = AdamOptions{};
  o.eps = -1e-8;
  refused(o, "eps");
  o = AdamOptions{};
  o.weight_decay = -0.01;
  refused(o, "weight_decay");
  o = AdamOptions{};
  o.lr = -1e-3;
  refused(o, "learning rate");
  o = AdamOptions{};
  o.lr = std::nan("");
  refused(o, "learning rate");
  o = AdamOptions{};
  o.eps = std::nan("");
  refused(o, "eps");
  CHECK_NOTHROW(Adam({p}, AdamOptions{}));
  CHECK_THROWS_WITH_AS(Adam({}, AdamOptions{}), doctest::Contains("empty parameter list"),
                       std::invalid_argument);
}
