// SqueezeExcitation (torchvision's, MobileNetV3 flavour) and channel_scale:
// forward against a double reference built from plain loops, gradcheck with
// respect to the input and all four parameters, both formats, names, errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "layers/squeeze_excite.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

// The whole SE block in double, from the module's own parameters.
std::vector<double> reference_se(const Tensor& x, SqueezeExcitation& se) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t sq = se.fc1->weight.size(0);
  std::vector<double> out(static_cast<size_t>(x.numel()));
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> pooled(static_cast<size_t>(c)), hidden(static_cast<size_t>(sq)),
        scale(static_cast<size_t>(c));
    for (int64_t ch = 0; ch < c; ++ch) {
      double total = 0;
      for (int64_t y = 0; y < h; ++y)
        for (int64_t xx = 0; xx < w; ++xx) total += x.item_at({i, ch, y, xx});
      pooled[ch] = total / static_cast<double>(h * w);
    }
    for (int64_t s = 0; s < sq; ++s) {
      double v = se.fc1->bias.item_at({s});
      for (int64_t ch = 0; ch < c; ++ch) v += se.fc1->weight.item_at({s, ch, 0, 0}) * pooled[ch];
      hidden[s] = std::max(v, 0.0);
    }
    for (int64_t ch = 0; ch < c; ++ch) {
      double v = se.fc2->bias.item_at({ch});
      for (int64_t s = 0; s < sq; ++s) v += se.fc2->weight.item_at({ch, s, 0, 0}) * hidden[s];
      scale[ch] = std::min(std::max(v + 3.0, 0.0), 6.0) / 6.0;
    }
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t xx = 0; xx < w; ++xx)
          out[static_cast<size_t>(((i * c + ch) * h + y) * w + xx)] =
              x.item_at({i, ch, y, xx}) * scale[ch];
  }
  return out;
}

}  // namespace

TEST_CASE("make_divisible: torchvision's rounding") {
  CHECK(make_divisible(16 / 4, 8) == 8);    // min_value = divisor
  CHECK(make_divisible(72 / 4, 8) == 24);   // 18 -> int(22)//8*8 = 16 < 0.9*18? no: 16 < 16.2 -> 24
  CHECK(make_divisible(120 / 4, 8) == 32);  // 30 -> 32
  CHECK(make_divisible(672 / 4, 8) == 168);  // 168 already a multiple
  CHECK(make_divisible(960 / 4, 8) == 240);
  CHECK(make_divisible(37.0, 1) == 37);    // rounding multiple 1 keeps the value
  CHECK(make_divisible(100.0, 32) == 96);  // 96 >= 90: no bump
}

TEST_CASE("squeeze_excitation: forward matches the double reference, both formats") {
  Generator gen(21);
  for (const Shape& shape : {Shape{1, 16, 7, 7}, Shape{3, 5, 1, 1}, Shape{2, 13, 5, 3}}) {
    for (MemoryFormat format : test::both_formats()) {
      CAPTURE(shape_str(shape));
      CAPTURE(memory_format_name(format));
      SqueezeExcitation se(shape[1], make_divisible(static_cast<double>(shape[1] / 4), 8), gen);
      const Tensor x = test::random_tensor(shape, gen, DType::f32, format);
      const Tensor y = se(x);
      CHECK(y.shape() == x.shape());
      CHECK(y.suggest_memory_format() == x.suggest_memory_format());
      // f32 through pool (sums of <= 49), two small GEMVs and a product: a few
      // hundred roundings of 6e-8 at most; 1e-5 leaves room and still catches
      // any wrong term (O(1e-1) and larger).
      CHECK(test::max_relative_error(y, reference_se(x, se)) < 1e-5);
    }
  }
}

TEST_CASE("squeeze_excitation: gradcheck wrt input and fc1/fc2 weights and biases") {
  Generator gen(22);
  for (MemoryFormat format : test::both_formats()) {
    CAPTURE(memory_format_name(format));
    SqueezeExcitation se(6, 3, gen);
    se.to(DType::f64);
    // Scale 3 puts the hardsigmoid inputs on its ramp, not only the flat parts.
    B3_CHECK_GRADCHECK(
        gradcheck_module(se, test::random_tensor({2, 6, 3, 5}, gen, DType::f64, format, 3.0)));
  }
}

TEST_CASE("channel_scale: gradcheck wrt both operands, both formats") {
  Generator gen(23);
  for (MemoryFormat format : test::both_formats()) {
    CAPTURE(memory_format_name(format));
    Tensor x = test::random_tensor({3, 5, 2, 3}, gen, DType::f64, format);
    Tensor s = test::random_tensor({3, 5, 1, 1}, gen, DType::f64);
    x.set_requires_grad(true);
    s.set_requires_grad(true);
    B3_CHECK_GRADCHECK(gradcheck([&] { return channel_scale(x, s); }, {x, s}));
  }
}

TEST_CASE("channel_scale: gradcheck wrt one operand alone, both formats") {
  // With both operands requiring grad (the case above, and every use in the
  // model) the NHWC backward is one fused pass; each gradient alone takes
  // loops of its own, checked here.
  Generator gen(24);
  for (MemoryFormat format : test::both_formats()) {
    const std::string format_name = memory_format_name(format);
    CAPTURE(format_name);
    for (bool wrt_scale : {true, false}) {
      CAPTURE(wrt_scale);
      Tensor x = test::random_tensor({3, 5, 2, 3}, gen, DType::f64, format);
      Tensor s = test::random_tensor({3, 5, 1, 1}, gen, DType::f64);
      Tensor& wrt = wrt_scale ? s : x;
      wrt.set_requires_grad(true);
      B3_CHECK_GRADCHECK(gradcheck([&] { return channel_scale(x, s); }, {wrt}));
    }
  }
}

TEST_CASE("squeeze_excitation: parameter names are torchvision's") {
  Generator gen(24);
  SqueezeExcitation se(16, 8, gen);
  std::vector<std::string> names;
  for (const auto& [name, tensor] : se.named_parameters()) names.push_back(name);
  CHECK(names == std::vector<std::string>{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"});
  CHECK(se.fc1->weight.shape() == Shape{8, 16, 1, 1});
  CHECK(se.fc2->weight.shape() == Shape{16, 8, 1, 1});
  CHECK(se.parameter_count() == 8 * 16 + 8 + 16 * 8 + 16);
}

TEST_CASE("channel_scale: shape mismatches are refused") {
  CHECK_THROWS_WITH_AS(channel_scale(zeros({2, 4, 3, 3}), zeros({2, 5, 1, 1})),
                       doctest::Contains("channel_scale: scale has shape [2, 5, 1, 1]"),
                       std::invalid_argument);
  Generator gen(25);
  CHECK_THROWS_WITH_AS(SqueezeExcitation(0, 4, gen), doctest::Contains("SqueezeExcitation"),
                       std::invalid_argument);
}
