// AdaptiveAvgPool2d(1): forward against a double reference, gradcheck, both
// memory formats, awkward shapes, errors.
#include <doctest/doctest.h>

#include "layers/pooling.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

std::vector<double> reference_pool(const Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  std::vector<double> out;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch) {
      double total = 0;
      for (int64_t y = 0; y < h; ++y)
        for (int64_t xx = 0; xx < w; ++xx) total += x.item_at({i, ch, y, xx});
      out.push_back(total / static_cast<double>(h * w));
    }
  return out;
}

const Shape kShapes[] = {{1, 3, 7, 7}, {3, 5, 1, 1}, {2, 13, 5, 9}, {127, 4, 2, 3}};

}  // namespace

TEST_CASE("adaptive_avg_pool2d: forward matches the mean over H, W, both formats") {
  Generator gen(11);
  for (const Shape& shape : kShapes) {
    for (MemoryFormat format : test::both_formats()) {
      CAPTURE(shape_str(shape));
      CAPTURE(memory_format_name(format));
      const Tensor x = test::random_tensor(shape, gen, DType::f32, format);
      const Tensor y = adaptive_avg_pool2d(x);
      CHECK(y.shape() == Shape{shape[0], shape[1], 1, 1});
      // Accumulated in double, rounded once to f32: within f32's half-ulp (6e-8).
      CHECK(test::max_relative_error(y, reference_pool(x)) < 1e-7);
    }
  }
}

TEST_CASE("adaptive_avg_pool2d: gradcheck in double, both formats") {
  Generator gen(12);
  for (const Shape& shape : {Shape{1, 3, 7, 7}, Shape{3, 5, 1, 1}, Shape{2, 5, 3, 5}}) {
    for (MemoryFormat format : test::both_formats()) {
      CAPTURE(shape_str(shape));
      CAPTURE(memory_format_name(format));
      AdaptiveAvgPool2d pool;
      B3_CHECK_GRADCHECK(
          gradcheck_module(pool, test::random_tensor(shape, gen, DType::f64, format)));
    }
  }
}

TEST_CASE("adaptive_avg_pool2d: bad input is refused with a clear message") {
  CHECK_THROWS_WITH_AS(adaptive_avg_pool2d(zeros({2, 3, 4})), doctest::Contains("4-D"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(adaptive_avg_pool2d(zeros({2, 3, 4, 4}), 2),
                       doctest::Contains("output size 2"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(AdaptiveAvgPool2d(7), doctest::Contains("only 1"), std::invalid_argument);
}
