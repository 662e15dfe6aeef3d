// conv2d with an output epilogue (layers/conv2d.h's Conv2dEpilogue: BatchNorm
// in evaluation mode and an activation, applied as the kernels store each
// output): bit for bit the values of conv2d followed by
// batch_norm_activation in evaluation mode, for every CPU algorithm
// (pointwise and im2col GEMMs, grouped, depthwise 3x3 and 5x5 at strides 1
// and 2, the narrow stem loops), f32 and f64, both memory formats, with and
// without a convolution bias, each activation, with and without a residual
// added in the store, one and two threads, and outputs large enough for
// streaming stores; the constants against
// batch_norm2d's own evaluation; the refusals (recording, CUDA, bad
// constants).
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/grad_mode.h"
#include "layers/activations.h"
#include "layers/batchnorm2d.h"
#include "layers/conv2d.h"
#include "tensor/ops.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

struct EpilogueCase {
  const char* what;
  int64_t batch, in_channels, out_channels, height, width, kernel, stride, groups;
};

// Channel counts with whole vectors, half vectors and leftovers; the last
// two rows' f32 outputs are 8 MiB and more, written with streaming stores.
const EpilogueCase kCases[] = {
    {"1x1 gemm", 2, 16, 24, 7, 9, 1, 1, 1},
    {"1x1 gemm, 5 columns", 3, 8, 5, 5, 5, 1, 1, 1},
    {"1x1 gemm, 40 columns", 2, 24, 40, 6, 6, 1, 1, 1},
    {"im2col 3x3", 2, 8, 20, 9, 9, 3, 1, 1},
    {"im2col 3x3 grouped", 2, 8, 12, 7, 7, 3, 2, 2},
    {"depthwise 3x3 s1", 2, 24, 24, 9, 11, 3, 1, 24},
    {"depthwise 3x3 s2, leftovers", 3, 5, 5, 9, 9, 3, 2, 5},
    {"depthwise 5x5 s1", 2, 40, 40, 8, 8, 5, 1, 40},
    {"depthwise 5x5 s2", 2, 72, 72, 11, 11, 5, 2, 72},
    {"narrow stem 3x3 s2", 2, 3, 16, 16, 16, 3, 2, 1},
    {"1x1 gemm, streamed", 8, 32, 64, 64, 64, 1, 1, 1},
    {"depthwise 3x3 s1, streamed", 4, 64, 64, 96, 96, 3, 1, 64},
};
const Activation kActivations[] = {Activation::none, Activation::relu, Activation::hardswish};

struct Layer {
  Tensor weight, bias, bn_weight, bn_bias, running_mean, running_var;
};

Layer random_layer(const EpilogueCase& c, bool with_bias, DType dtype, Generator& gen) {
  Layer l;
  l.weight = test::random_tensor({c.out_channels, c.in_channels / c.groups, c.kernel, c.kernel},
                                 gen, dtype, MemoryFormat::contiguous, 0.5);
  if (with_bias) l.bias = test::random_tensor({c.out_channels}, gen, dtype);
  // Weight ~ N(0.5, 1.5) and bias ~ N(0, 1): both sides of ReLU's kink and
  // all of Hardswish's ramp.
  const test::BatchNormState s = test::random_batch_norm_state(c.out_channels, gen, 0.5, 1.5, 1.0);
  l.bn_weight = test::from_values(s.weight, {c.out_channels}, dtype);
  l.bn_bias = test::from_values(s.bias, {c.out_channels}, dtype);
  l.running_mean = test::from_values(s.running_mean, {c.out_channels}, dtype);
  l.running_var = test::from_values(s.running_var, {c.out_channels}, dtype);
  return l;
}

constexpr double kEps = 1e-3;  // MobileNetV3's

Tensor with_epilogue(const Tensor& x, const Layer& l, const EpilogueCase& c, Activation activation,
                     const Tensor& residual = Tensor()) {
  const BatchNormInferenceConstants folded =
      batch_norm_inference_constants(l.bn_weight, l.bn_bias, l.running_mean, l.running_var, kEps);
  return conv2d(x, l.weight, l.bias, c.stride, c.kernel / 2, c.groups,
                Conv2dEpilogue{folded.scale, folded.shift, activation, residual});
}

Tensor in_sequence(const Tensor& x, const Layer& l, const EpilogueCase& c, Activation activation) {
  const Tensor y = conv2d(x, l.weight, l.bias, c.stride, c.kernel / 2, c.groups);
  return batch_norm_activation(y, l.bn_weight, l.bn_bias, l.running_mean, l.running_var, Tensor(),
                               false, 0.1, kEps, activation);
}

}  // namespace

TEST_CASE("conv2d epilogue: the values of conv2d then BatchNorm + activation, bit for bit") {
  Generator gen(81);
  NoGradGuard no_grad;
  for (int threads : {1, 2}) {
    test::use_openmp_threads(threads);
    for (const EpilogueCase& c : kCases) {
      for (DType dtype : {DType::f32, DType::f64}) {
        for (MemoryFormat format : test::both_formats()) {
          for (bool with_bias : {false, true}) {
            CAPTURE(threads);
            CAPTURE(c.what);
            CAPTURE(dtype_name(dtype));
            CAPTURE(memory_format_name(format));
            CAPTURE(with_bias);
            const Layer l = random_layer(c, with_bias, dtype, gen);
            const Tensor x = test::random_tensor({c.batch, c.in_channels, c.height, c.width}, gen,
                                                 dtype, format);
            for (Activation activation : kActivations) {
              CAPTURE(activation_name(activation));
              const Tensor fused = with_epilogue(x, l, c, activation);
              const Tensor separate = in_sequence(x, l, c, activation);
              CHECK(fused.suggest_memory_format() == format);
              CHECK(test::max_relative_error(fused, separate) == 0.0);
              // A residual added in the store: the separate add's values.
              const Tensor residual = test::random_tensor(separate.shape(), gen, dtype, format);
              const Tensor fused_residual = with_epilogue(x, l, c, activation, residual);
              CHECK(test::max_relative_error(fused_residual, add(separate, residual)) == 0.0);
            }
          }
        }
      }
    }
  }
  test::use_openmp_threads(1);
}

TEST_CASE("batch_norm_inference_constants: act(x * scale + shift) is batch_norm2d's evaluation") {
  Generator gen(82);
  NoGradGuard no_grad;
  for (DType dtype : {DType::f32, DType::f64}) {
    const EpilogueCase c{"", 1, 1, 6, 1, 1, 1, 1, 1};
    const Layer l = random_layer(c, false, dtype, gen);
    const BatchNormInferenceConstants folded =
        batch_norm_inference_constants(l.bn_weight, l.bn_bias, l.running_mean, l.running_var, kEps);
    CHECK(folded.scale.dtype() == dtype);
    // y = x * scale + shift against the normalization written out in double.
    const Tensor x = test::random_tensor({3, 6, 2, 2}, gen, dtype);
    const Tensor y = batch_norm2d(x, l.bn_weight, l.bn_bias, l.running_mean, l.running_var,
                                  Tensor(), false, 0.1, kEps);
    std::vector<double> expected;
    for (int64_t n = 0; n < 3; ++n)
      for (int64_t ch = 0; ch < 6; ++ch)
        for (int64_t i = 0; i < 4; ++i) {
          const double v = x.item_at({n, ch, i / 2, i % 2});
          expected.push_back(v * folded.scale.item_at({ch}) + folded.shift.item_at({ch}));
        }
    // f32: the constants and y are rounded to float (2^-24 relative each).
    CHECK(test::max_relative_error(y, expected) < (dtype == DType::f32 ? 1e-6 : 1e-14));
  }
  // Without affine parameters (1 and 0) and without running statistics.
  const Tensor mean = zeros({2}), var = ones({2});
  const BatchNormInferenceConstants plain =
      batch_norm_inference_constants(Tensor(), Tensor(), mean, var, kEps);
  CHECK(plain.scale.item_at({0}) == doctest::Approx(1.0 / std::sqrt(1.0 + kEps)));
  CHECK(plain.shift.item_at({1}) == 0.0);
  CHECK_THROWS_WITH_AS(batch_norm_inference_constants(Tensor(), Tensor(), Tensor(), var, kEps),
                       doctest::Contains("running_mean and running_var are required"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(batch_norm_inference_constants(ones({3}), Tensor(), mean, var, kEps),
                       doctest::Contains("must all be [C] of one dtype"), std::invalid_argument);
}

TEST_CASE("conv2d epilogue: refused while recording, with wrong constants or activations") {
  Generator gen(83);
  const Tensor x = test::random_tensor({1, 4, 5, 5}, gen, DType::f32);
  Tensor w = test::random_tensor({8, 4, 1, 1}, gen, DType::f32);
  const Conv2dEpilogue good{ones({8}), zeros({8}), Activation::relu};
  w.set_requires_grad(true);
  CHECK_THROWS_WITH_AS(conv2d(x, w, Tensor(), 1, 0, 1, good),
                       doctest::Contains("conv2d: an output epilogue is for inference"),
                       std::invalid_argument);
  NoGradGuard no_grad;
  CHECK(conv2d(x, w, Tensor(), 1, 0, 1, good).size(1) == 8);  // no recording: fine
  CHECK_THROWS_WITH_AS(conv2d(x, w, Tensor(), 1, 0, 1, {ones({7}), zeros({8})}),
                       doctest::Contains("epilogue scale must be a CPU tensor [8]"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(conv2d(x, w, Tensor(), 1, 0, 1, {ones({8}), zeros({8}, DType::f64)}),
                       doctest::Contains("epilogue shift must be a CPU tensor [8]"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(conv2d(x, w, Tensor(), 1, 0, 1, {ones({8}), Tensor()}),
                       doctest::Contains("epilogue shift is undefined"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(conv2d(x, w, Tensor(), 1, 0, 1,
                              {ones({8}), zeros({8}), Activation::none, ones({1, 8, 5, 4})}),
                       doctest::Contains("epilogue residual must be a CPU tensor [1, 8, 5, 5]"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      conv2d(x, w, Tensor(), 1, 0, 1, {ones({8}), zeros({8}), Activation::hardsigmoid}),
      doctest::Contains("epilogue activation hardsigmoid is not one the kernels apply"),
      std::invalid_argument);
}
