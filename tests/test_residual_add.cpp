// The residual connection out = x + block(x) as MobileNetV3's inverted
// residual uses it: forward, gradient through both paths, mixed memory formats.
#include <doctest/doctest.h>

#include "layers/activations.h"
#include "tensor/ops.h"
#include "tests/support/reference.h"

using namespace b3;

TEST_CASE("residual add: forward is the elementwise sum, in the first operand's format") {
  Generator gen(31);
  for (MemoryFormat format_a : test::both_formats()) {
    for (MemoryFormat format_b : test::both_formats()) {
      const Tensor a = test::random_tensor({3, 5, 7, 7}, gen, DType::f32, format_a);
      const Tensor b = test::random_tensor({3, 5, 7, 7}, gen, DType::f32, format_b);
      const Tensor y = add(a, b);
      CHECK(y.suggest_memory_format() == a.suggest_memory_format());
      std::vector<double> expected = a.to_doubles();
      const std::vector<double> bv = b.to_doubles();
      for (size_t i = 0; i < expected.size(); ++i) expected[i] += bv[i];
      // One f32 addition: exact to half an ulp.
      CHECK(test::max_relative_error(y, expected) < 1e-7);
    }
  }
}

TEST_CASE("residual add: gradcheck of x + hardswish(x) (the gradient takes both paths)") {
  Generator gen(32);
  for (MemoryFormat format : test::both_formats()) {
    for (const Shape& shape : {Shape{1, 3, 1, 1}, Shape{3, 5, 7, 7}, Shape{2, 13, 3, 5}}) {
      CAPTURE(shape_str(shape));
      Tensor x = test::random_tensor(shape, gen, DType::f64, format, 2.0);
      x.set_requires_grad(true);
      B3_CHECK_GRADCHECK(gradcheck([&] { return add(x, hardswish(x)); }, {x}));
    }
  }
}

TEST_CASE("residual add: shape mismatch names both shapes") {
  CHECK_THROWS_WITH_AS(add(zeros({2, 16, 4, 4}), zeros({2, 24, 4, 4})),
                       doctest::Contains("add: shapes [2, 16, 4, 4] and [2, 24, 4, 4] differ"),
                       std::invalid_argument);
}
