// Autograd engine: chain rule, diamonds, accumulation across backward calls,
// grad mode, detach, the errors of misuse, the memory format of leaf
// gradients and when the first one is kept rather than copied, and graphs
// long enough to overflow a recursive walk or a recursive destruction.
#include <doctest/doctest.h>

#include <cmath>
#include <stdexcept>
#include <thread>
#include <vector>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "tensor/ops.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

Tensor leaf(const std::vector<double>& values, const Shape& shape) {
  Tensor t = from_doubles(values, shape, DType::f64);
  t.set_requires_grad(true);
  return t;
}

}  // namespace

TEST_CASE("autograd: chain rule through several ops") {
  // y = sum(3 * (x * x + x) - x) ; dy/dx = 3 * (2x + 1) - 1 = 6x + 2.
  const std::vector<double> xs{-1.5, 0.0, 0.25, 2.0, 7.0, -3.0};
  Tensor x = leaf(xs, {2, 3});
  Tensor y = sum(sub(scale(add(mul(x, x), x), 3.0), x));
  CHECK(y.requires_grad());
  CHECK_FALSE(y.is_leaf());
  CHECK(x.is_leaf());
  CHECK(y.grad_fn() != nullptr);
  CHECK(y.grad_fn()->name() == "SumBackward");
  y.backward();
  const std::vector<double> g = x.grad().to_doubles();
  for (size_t i = 0; i < xs.size(); ++i) CHECK(g[i] == 6 * xs[i] + 2);
  // Intermediate (non-leaf) tensors get no .grad.
  Tensor z = mul(x, x);
  sum(z).backward();
  CHECK_FALSE(z.grad().defined());
}

TEST_CASE("autograd: a diamond sums the gradients of both paths") {
  // a = 2x; b = a * a; c = a + b; y = mean(c + a)
  // dy/da = (1 + 2a + 1) / n, dy/dx = 2 * (2 + 4x) / n
  const std::vector<double> xs{1.0, -2.0, 0.5, 3.0};
  Tensor x = leaf(xs, {4});
  Tensor a = scale(x, 2.0);
  Tensor y = mean(add(add(a, mul(a, a)), a));
  y.backward();
  const std::vector<double> g = x.grad().to_doubles();
  for (size_t i = 0; i < xs.size(); ++i)
    CHECK(g[i] == doctest::Approx(2 * (2 + 4 * xs[i]) / 4).epsilon(1e-15));
  // The same tensor twice in one op: d(x + x)/dx = 2.
  Tensor w = leaf({1, 2}, {2});
  sum(add(w, w)).backward();
  CHECK(w.grad().to_doubles() == std::vector<double>{2, 2});
}

TEST_CASE("autograd: gradients accumulate across backward calls until zero_grad") {
  Tensor x = leaf({1, 2, 3}, {3});
  sum(mul(x, x)).backward();
  CHECK(x.grad().to_doubles() == std::vector<double>{2, 4, 6});
  const Tensor first_grad = x.grad();
  sum(scale(x, 10.0)).backward();
  CHECK(x.grad().to_doubles() == std::vector<double>{12, 14, 16});
  CHECK(x.grad().is_same(first_grad));  // accumulated in place
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
  sum(x).backward();
  CHECK(x.grad().to_doubles() == std::vector<double>{1, 1, 1});
  // The first gradient is a fresh tensor, not an alias of anything in the graph:
  // a later in-place accumulation must not write into another leaf's gradient.
  Tensor p = leaf({1, 1}, {2}), q = leaf({5, 5}, {2});
  sum(add(p, q)).backward();
  sum(scale(p, 2.0)).backward();
  CHECK(p.grad().to_doubles() == std::vector<double>{3, 3});
  CHECK(q.grad().to_doubles() == std::vector<double>{1, 1});
}

TEST_CASE("autograd: NoGradGuard records nothing and restores the mode, also on exceptions") {
  Tensor x = leaf({1, 2}, {2});
  CHECK(GradMode::is_enabled());
  {
    NoGradGuard guard;
    CHECK_FALSE(GradMode::is_enabled());
    Tensor y = mul(x, x);
    CHECK_FALSE(y.requires_grad());
    CHECK(y.grad_fn() == nullptr);
    CHECK(x.reshape({2, 1}).grad_fn() == nullptr);
    CHECK(x.to(DType::f32).grad_fn() == nullptr);
    {
      NoGradGuard nested;
      CHECK_FALSE(GradMode::is_enabled());
    }
    CHECK_FALSE(GradMode::is_enabled());  // the nested guard restores "off", not "on"
  }
  CHECK(GradMode::is_enabled());
  try {
    NoGradGuard guard;
    throw std::runtime_error("boom");
  } catch (const std::runtime_error&) {
  }
  CHECK(GradMode::is_enabled());
  CHECK(mul(x, x).grad_fn() != nullptr);
  // A backward pass itself runs without recording, and leaves the mode on.
  sum(mul(x, x)).backward();
  CHECK(GradMode::is_enabled());
  CHECK(x.grad().grad_fn() == nullptr);
}

TEST_CASE("autograd: grad mode is per thread") {
  // The flag is thread_local: a guard here leaves other threads recording.
  NoGradGuard guard;
  bool enabled_elsewhere = false, recorded_elsewhere = false;
  std::thread worker([&] {
    enabled_elsewhere = GradMode::is_enabled();
    Tensor x = leaf({1}, {1});
    recorded_elsewhere = scale(x, 2.0).grad_fn() != nullptr;
  });
  worker.join();
  CHECK(enabled_elsewhere);
  CHECK(recorded_elsewhere);
  CHECK_FALSE(GradMode::is_enabled());
}

TEST_CASE("autograd: detach cuts the graph and shares the data") {
  Tensor x = leaf({1, 2, 3}, {3});
  Tensor d = x.detach();
  CHECK_FALSE(d.requires_grad());
  CHECK(d.grad_fn() == nullptr);
  CHECK(d.storage() == x.storage());
  // y = sum(x * detach(x)): only the first factor carries gradient -> dy/dx = x.
  sum(mul(x, d)).backward();
  CHECK(x.grad().to_doubles() == std::vector<double>{1, 2, 3});
  // Detaching a non-leaf gives a new leaf that does not require grad.
  Tensor m = mul(x, x);
  Tensor md = m.detach();
  CHECK(md.is_leaf());
  CHECK_FALSE(md.requires_grad());
  CHECK_THROWS_AS(md.backward(), std::invalid_argument);
}

TEST_CASE("autograd: misuse raises clear errors") {
  Tensor x = leaf({1, 2, 3, 4}, {2, 2});
  Tensor y = mul(x, x);
  CHECK_THROWS_WITH_AS(y.set_requires_grad(false), doctest::Contains("only leaf tensors"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(zeros({2}, DType::i64).set_requires_grad(true),
                       doctest::Contains("only floating tensors can require grad"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(zeros({2}).backward(), doctest::Contains("does not require grad"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(y.backward(),
                       doctest::Contains("grad_output can be omitted only for a one-element"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(y.backward(ones({4}, DType::f64)),
                       doctest::Contains("grad_output has shape [4]"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(y.backward(ones({2, 2}, DType::f32)),
                       doctest::Contains("backward: grad_output is f32, the tensor is f64"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(Tensor().backward(), doctest::Contains("undefined"), std::logic_error);
  // With an explicit grad_output a non-scalar is fine: d(sum(g * x * x))/dx = 2 g x.
  y.backward(from_doubles({1, 0, -1, 2}, {2, 2}, DType::f64));
  CHECK(x.grad().to_doubles() == std::vector<double>{2, 0, -6, 16});
  // A leaf can be the root: its gradient is grad_output.
  Tensor z = leaf({3}, {1});
  z.backward();
  CHECK(z.grad().to_doubles() == std::vector<double>{1});
  // A backward that returns the wrong number of gradients is reported by name.
  Tensor w = leaf({1, 2}, {2});
  Tensor bad = record_lambda(w.detach().clone(), "BrokenBackward", {w},
                             [](const Tensor&) { return std::vector<Tensor>{}; });
  CHECK_THROWS_WITH_AS(sum(bad).backward(),
                       doctest::Contains("BrokenBackward returned 0 gradients for 1"),
                       std::logic_error);
  CHECK(GradMode::is_enabled());  // a backward that throws still restores grad mode
  Tensor wrong_shape = record_lambda(w.detach().clone(), "ShapeBackward", {w}, [](const Tensor&) {
    return std::vector<Tensor>{zeros({3}, DType::f64)};
  });
  CHECK_THROWS_WITH_AS(sum(wrong_shape).backward(),
                       doctest::Contains("ShapeBackward: gradient for input 0 has shape [3]"),
                       std::logic_error);
}

TEST_CASE("autograd: a node that sends no gradient to one input does not block the rest") {
  // b = 2x feeds both c = 3b and the custom node; the custom node returns an
  // undefined gradient for c (as a backward may for an input it ignores), so c's
  // node never receives a gradient. b must still run and reach x: dy/dx = 2.
  Tensor x = leaf({1, 2}, {2});
  Tensor b = scale(x, 2.0);
  Tensor c = scale(b, 3.0);
  Tensor d = record_lambda(b.detach().clone(), "IgnoresFirst", {c, b}, [](const Tensor& g) {
    return std::vector<Tensor>{Tensor(), g};
  });
  sum(d).backward();
  REQUIRE(x.grad().defined());
  CHECK(x.grad().to_doubles() == std::vector<double>{2, 2});
}

TEST_CASE("autograd: a leaf's gradient takes the leaf's memory format") {
  Generator gen(5);
  for (MemoryFormat format : test::both_formats()) {
    Tensor x = test::random_tensor({2, 3, 4, 5}, gen, DType::f64, format);
    x.set_requires_grad(true);
    // The upstream gradient arrives in NCHW (sum's backward fills in the input's
    // format, the reshape goes through NCHW); the leaf gradient still matches x.
    sum(mul(x.reshape({2, 60}), x.reshape({2, 60}))).backward();
    REQUIRE(x.grad().defined());
    CHECK(x.grad().is_contiguous(format));
    CHECK(x.grad().suggest_memory_format() == x.suggest_memory_format());
    std::vector<double> expected = x.to_doubles();
    for (double& v : expected) v *= 2;
    CHECK(x.grad().to_doubles() == expected);
    // Accumulating a gradient of the other format keeps the first one's layout.
    const MemoryFormat other =
        format == MemoryFormat::contiguous ? MemoryFormat::channels_last : MemoryFormat::contiguous;
    x.backward(ones({2, 3, 4, 5}, TensorOptions(DType::f64).with_format(other)));
    CHECK(x.grad().is_contiguous(format));
    for (double& v : expected) v += 1;
    CHECK(x.grad().to_doubles() == expected);
  }
}

TEST_CASE("autograd: a leaf keeps a first gradient nothing else holds, and copies any other") {
  Tensor x = leaf({1, 2, 3}, {3});
  // A node handing back a fresh tensor: the leaf takes that very tensor.
  const void* fresh_data = nullptr;
  Tensor y = record_lambda(x.detach().clone(), "Fresh", {x}, [&](const Tensor& g) {
    Tensor fresh = g.clone();
    fresh_data = fresh.data_ptr();
    return std::vector<Tensor>{fresh};
  });
  y.backward(from_doubles({4, 5, 6}, {3}, DType::f64));
  CHECK(x.grad().data_ptr() == fresh_data);
  CHECK(x.grad().to_doubles() == std::vector<double>{4, 5, 6});
  x.zero_grad();

  // A node that keeps a handle on what it hands back, or hands back a view of
  // a larger buffer: the leaf gets its own copy, unchanged by later writes.
  Tensor kept;
  Tensor y2 = record_lambda(x.detach().clone(), "Kept", {x}, [&](const Tensor& g) {
    kept = g.clone();
    return std::vector<Tensor>{kept};
  });
  y2.backward(from_doubles({1, 1, 1}, {3}, DType::f64));
  CHECK(x.grad().data_ptr() != kept.data_ptr());
  kept.fill_(7.0);
  CHECK(x.grad().to_doubles() == std::vector<double>{1, 1, 1});
  x.zero_grad();
  Tensor y3 = record_lambda(x.detach().clone(), "Narrowed", {x}, [](const Tensor&) {
    return std::vector<Tensor>{from_doubles({9, 8, 7, 6}, {4}, DType::f64).narrow(0, 0, 3)};
  });
  y3.backward(from_doubles({1, 1, 1}, {3}, DType::f64));
  CHECK(x.grad().to_doubles() == std::vector<double>{9, 8, 7});
  CHECK(x.grad().storage()->nbytes() == 3 * sizeof(double));

  // The gradient the caller passes to backward() on a leaf is copied, too.
  Tensor seed = from_doubles({2, 2, 2}, {3}, DType::f64);
  x.zero_grad();
  x.backward(seed);
  CHECK(x.grad().data_ptr() != seed.data_ptr());
  seed.fill_(0.0);
  CHECK(x.grad().to_doubles() == std::vector<double>{2, 2, 2});
}

TEST_CASE("autograd: views and casts pass gradients back") {
  Tensor x = leaf({1, 2, 3, 4, 5, 6}, {2, 3});
  // narrow + permute + reshape + cast to f32 and back
  Tensor y = x.narrow(1, 1, 2).permute({1, 0}).reshape({4}).to(DType::f32).to(DType::f64);
  y.backward(from_doubles({1, 2, 3, 4}, {4}, DType::f64));
  // y = [x01, x11, x02, x12] with weights 1, 2, 3, 4.
  CHECK(x.grad().to_doubles() == std::vector<double>{0, 1, 3, 0, 2, 4});
  x.zero_grad();
  sum(x.flatten().view({3, 2}).transpose(0, 1).clone()).backward();
  CHECK(x.grad().to_doubles() == std::vector<double>(6, 1.0));
  x.zero_grad();
  sum(x.contiguous(MemoryFormat::contiguous)).backward();
  CHECK(x.grad().to_doubles() == std::vector<double>(6, 1.0));
}

TEST_CASE("autograd: a 10,000-op chain runs backward and is destroyed without recursion") {
  // Each link is y = y * 1 + ... kept simple: y = scale(y, 1) alternating with a
  // view, so dy/dx = 1 after 10,000 nodes. A recursive backward or a recursive
  // release of the shared_ptr chain would overflow the stack at some depth; the
  // 200,000-op chain below puts that well past 8 MiB of frames.
  for (int length : {10000, 200000}) {
    CAPTURE(length);
    Tensor x = leaf({1, 2}, {2});
    {
      Tensor y = x;
      for (int i = 0; i < length; ++i) y = (i % 2 == 0) ? scale(y, 1.0) : y.reshape({2});
      sum(y).backward();
      CHECK(x.grad().to_doubles() == std::vector<double>{1, 1});
    }                           // y and its whole graph are released here
    CHECK(x.grad().defined());  // the leaf outlives the graph
  }
  // A graph released without ever running backward, from a non-leaf in the middle.
  Tensor x = leaf({1}, {1});
  Tensor y = x;
  for (int i = 0; i < 200000; ++i) y = add(y, x);
  y = Tensor();  // must not overflow the stack
  CHECK(x.is_leaf());
}

TEST_CASE("autograd: a grad-ready hook runs once, after the leaf's last contribution") {
  Tensor w = full({3}, 2.0);
  w.set_requires_grad(true);
  Tensor unused = full({3}, 1.0);
  unused.set_requires_grad(true);
  std::vector<double> seen;  // the gradient as the hook saw it
  int calls = 0;
  w.add_grad_ready_hook([&](const Tensor& leaf) {
    ++calls;
    seen = leaf.grad().to_doubles();
  });
  int unused_calls = 0;
  unused.add_grad_ready_hook([&](const Tensor&) { ++unused_calls; });
  // w reaches the loss through two paths: d/dw sum(w*w + w) = 2w + 1 = 5.
  sum(add(mul(w, w), w)).backward();
  CHECK(calls == 1);
  CHECK(seen == std::vector<double>{5.0, 5.0, 5.0});  // complete when the hook ran
  CHECK(unused_calls == 0);                           // not in this graph
  sum(w).backward();                                  // once per backward
  CHECK(calls == 2);
  w.clear_grad_ready_hooks();
  sum(w).backward();
  CHECK(calls == 2);
  Tensor y = mul(w, w);
  CHECK_THROWS_AS(y.add_grad_ready_hook([](const Tensor&) {}), std::invalid_argument);
}
