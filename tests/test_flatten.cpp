// Flatten: logical (N, C, H, W) order for both memory formats, a view where
// PyTorch gives one, the dims arguments, the gradient, and error messages.
#include <doctest/doctest.h>

#include <vector>

#include "autograd/gradcheck.h"
#include "layers/flatten.h"
#include "tests/support/reference.h"

using namespace b3;

TEST_CASE("Flatten: merges C, H, W in logical order for both memory formats") {
  Generator gen(1);
  const Shape shapes[] = {{2, 3, 4, 5}, {1, 13, 7, 7}, {3, 5, 1, 1}, {127, 3, 1, 2}};
  Flatten flatten_module;
  CHECK(flatten_module.describe() == "Flatten(start_dim=1, end_dim=-1)");
  for (const Shape& shape : shapes) {
    for (MemoryFormat format : test::both_formats()) {
      CAPTURE(shape_str(shape));
      CAPTURE(memory_format_name(format));
      const Tensor x = test::random_tensor(shape, gen, DType::f32, format);
      const Tensor y = flatten_module(x);
      CHECK(y.shape() == Shape{shape[0], shape[1] * shape[2] * shape[3]});
      CHECK(y.is_contiguous());
      // Row n of y is x[n] read in C, H, W order, whatever the strides: an exact copy.
      CHECK(y.to_doubles() == x.to_doubles());
    }
  }
}

TEST_CASE("Flatten: pooled features [N, C, 1, 1] become [N, C] without a copy") {
  // MobileNetV3's path: channels_last [N, C, 1, 1] is also NCHW-contiguous
  // (size-1 dims do not constrain strides), so flatten is a view, as in PyTorch.
  Generator gen(2);
  for (MemoryFormat format : test::both_formats()) {
    const Tensor x = test::random_tensor({3, 13, 1, 1}, gen, DType::f32, format);
    const Tensor y = Flatten()(x);
    CHECK(y.shape() == Shape{3, 13});
    CHECK(y.storage() == x.storage());
    CHECK(y.to_doubles() == x.to_doubles());
  }
  // A channels_last tensor with real spatial size cannot be viewed: a copy.
  const Tensor x = test::random_tensor({2, 3, 2, 2}, gen, DType::f32, MemoryFormat::channels_last);
  CHECK(Flatten()(x).storage() != x.storage());
}

TEST_CASE("Flatten: start_dim and end_dim, negative dims, the functional form") {
  Generator gen(3);
  const Tensor x = test::random_tensor({2, 3, 4, 5}, gen);
  CHECK(Flatten(0)(x).shape() == Shape{120});
  CHECK(Flatten(1, 2)(x).shape() == Shape{2, 12, 5});
  CHECK(Flatten(-3, -2)(x).shape() == Shape{2, 12, 5});
  CHECK(Flatten(2, 2)(x).shape() == Shape{2, 3, 4, 5});
  CHECK(flatten(x).shape() == Shape{120});  // torch.flatten's defaults: everything
  CHECK(flatten(x, 2).shape() == Shape{2, 3, 20});
  CHECK(Flatten()(zeros({4, 6})).shape() == Shape{4, 6});
  CHECK(Flatten().parameters().empty());
}

TEST_CASE("Flatten: gradient is the incoming gradient reshaped back, both formats") {
  Generator gen(4);
  const Shape shapes[] = {{1, 3, 7, 7}, {3, 5, 1, 1}, {2, 13, 3, 1}};
  for (const Shape& shape : shapes) {
    for (MemoryFormat format : test::both_formats()) {
      CAPTURE(shape_str(shape));
      CAPTURE(memory_format_name(format));
      Flatten flatten_module;
      const Tensor x = test::random_tensor(shape, gen, DType::f64, format);
      B3_CHECK_GRADCHECK(gradcheck_module(flatten_module, x));

      // And exactly: the gradient of sum(r * flatten(x)) is r reshaped.
      Tensor leaf = x.detach();
      leaf.set_requires_grad(true);
      const Tensor y = flatten_module(leaf);
      const Tensor r = test::random_tensor(y.shape(), gen);
      y.backward(r);
      REQUIRE(leaf.grad().defined());
      CHECK(leaf.grad().shape() == shape);
      CHECK(leaf.grad().to_doubles() == r.to_doubles());
    }
  }
}

TEST_CASE("Flatten: dims that do not fit the input are refused") {
  CHECK_THROWS_WITH_AS(Flatten(2)(zeros({3, 4})),
                       doctest::Contains("Flatten: dims 2..-1 do not fit the input [3, 4]"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(Flatten(2, 1)(zeros({3, 4, 5})),
                       doctest::Contains("start_dim must not come after end_dim"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(Flatten(0, -4)(zeros({3, 4, 5})),
                       doctest::Contains("do not fit the input [3, 4, 5]"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(Flatten()(Tensor()), doctest::Contains("Flatten: the input is undefined"),
                       std::invalid_argument);
}
