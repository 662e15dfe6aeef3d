// conv2d and Conv2d: forward against a naive double-precision convolution
// written here (seven nested loops), gradcheck of every kernel family
// (pointwise, im2col + GEMM, grouped, depthwise) in both memory formats,
// batch chunking, argument errors, and the module's parameters and init.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/grad_mode.h"
#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "layers/conv2d.h"
#include "tensor/ops.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

// out[n, co, y, x] = bias[co] + sum_{ci, ky, kx} w[co, ci, ky, kx] *
//                    in[n, g*Cin/groups + ci, y*stride + ky - pad, x*stride + kx - pad]
// in double, logical NCHW order, zero outside the input.
std::vector<double> reference_conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias,
                                     int64_t stride, int64_t padding, int64_t groups) {
  const std::vector<double> in = input.to_doubles();
  const std::vector<double> w = weight.to_doubles();
  const std::vector<double> b = bias.defined() ? bias.to_doubles() : std::vector<double>();
  const int64_t batch = input.size(0), cin = input.size(1), height = input.size(2),
                width = input.size(3);
  const int64_t cout = weight.size(0), group_in = weight.size(1), k = weight.size(2);
  const int64_t group_out = cout / groups;
  const int64_t out_h = (height + 2 * padding - k) / stride + 1;
  const int64_t out_w = (width + 2 * padding - k) / stride + 1;
  std::vector<double> out(static_cast<size_t>(batch * cout * out_h * out_w));
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t co = 0; co < cout; ++co)
      for (int64_t y = 0; y < out_h; ++y)
        for (int64_t x = 0; x < out_w; ++x) {
          double total = b.empty() ? 0.0 : b[static_cast<size_t>(co)];
          const int64_t first_in = (co / group_out) * group_in;
          for (int64_t ci = 0; ci < group_in; ++ci)
            for (int64_t ky = 0; ky < k; ++ky)
              for (int64_t kx = 0; kx < k; ++kx) {
                const int64_t iy = y * stride + ky - padding, ix = x * stride + kx - padding;
                if (iy < 0 || iy >= height || ix < 0 || ix >= width) continue;
                total +=
                    w[static_cast<size_t>(((co * group_in + ci) * k + ky) * k + kx)] *
                    in[static_cast<size_t>(((n * cin + first_in + ci) * height + iy) * width + ix)];
              }
          out[static_cast<size_t>(((n * cout + co) * out_h + y) * out_w + x)] = total;
        }
  (void)cin;
  return out;
}

// The gradients of L = sum(grad_out * conv2d(input, weight, bias)), by the
// same loops as reference_conv2d: each product w * in adds grad_out * in to
// dL/dw and grad_out * w to dL/din. Returns {grad_input, grad_weight, grad_bias}.
std::vector<std::vector<double>> reference_conv2d_backward(const Tensor& input,
                                                           const Tensor& weight,
                                                           const Tensor& grad_out, int64_t stride,
                                                           int64_t padding, int64_t groups) {
  const std::vector<double> in = input.to_doubles();
  const std::vector<double> w = weight.to_doubles();
  const std::vector<double> go = grad_out.to_doubles();
  const int64_t batch = input.size(0), cin = input.size(1), height = input.size(2),
                width = input.size(3);
  const int64_t cout = weight.size(0), group_in = weight.size(1), k = weight.size(2);
  const int64_t group_out = cout / groups;
  const int64_t out_h = grad_out.size(2), out_w = grad_out.size(3);
  std::vector<double> grad_in(in.size(), 0.0), grad_w(w.size(), 0.0),
      grad_b(static_cast<size_t>(cout), 0.0);
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t co = 0; co < cout; ++co)
      for (int64_t y = 0; y < out_h; ++y)
        for (int64_t x = 0; x < out_w; ++x) {
          const double g = go[static_cast<size_t>(((n * cout + co) * out_h + y) * out_w + x)];
          grad_b[static_cast<size_t>(co)] += g;
          const int64_t first_in = (co / group_out) * group_in;
          for (int64_t ci = 0; ci < group_in; ++ci)
            for (int64_t ky = 0; ky < k; ++ky)
              for (int64_t kx = 0; kx < k; ++kx) {
                const int64_t iy = y * stride + ky - padding, ix = x * stride + kx - padding;
                if (iy < 0 || iy >= height || ix < 0 || ix >= width) continue;
                const size_t wi = static_cast<size_t>(((co * group_in + ci) * k + ky) * k + kx);
                const size_t ii =
                    static_cast<size_t>(((n * cin + first_in + ci) * height + iy) * width + ix);
                grad_w[wi] += g * in[ii];
                grad_in[ii] += g * w[wi];
              }
        }
  return {grad_in, grad_w, grad_b};
}

struct Case {
  int64_t batch, in_channels, out_channels, height, width, kernel, stride, padding, groups;
  bool bias;
};

std::string describe(const Case& c) {
  std::ostringstream text;
  text << "N" << c.batch << " Cin" << c.in_channels << " Cout" << c.out_channels << " " << c.height
       << "x" << c.width << " k" << c.kernel << " s" << c.stride << " p" << c.padding << " g"
       << c.groups << (c.bias ? " bias" : " no-bias");
  return text.str();
}

struct Operands {
  Tensor input, weight, bias;
};

// Weights scaled by 1/sqrt(fan_in), as nn.Conv2d's init, so outputs are O(1).
Operands make_operands(const Case& c, Generator& gen, DType dtype, MemoryFormat format) {
  const int64_t group_in = c.in_channels / c.groups;
  const double scale = 1.0 / std::sqrt(static_cast<double>(group_in * c.kernel * c.kernel));
  Operands o;
  o.input = test::random_tensor({c.batch, c.in_channels, c.height, c.width}, gen, dtype, format);
  o.weight = test::random_tensor({c.out_channels, group_in, c.kernel, c.kernel}, gen, dtype,
                                 MemoryFormat::contiguous, scale);
  if (c.bias) o.bias = test::random_tensor({c.out_channels}, gen, dtype);
  return o;
}

Shape output_shape(const Case& c) {
  return {c.batch, c.out_channels, (c.height + 2 * c.padding - c.kernel) / c.stride + 1,
          (c.width + 2 * c.padding - c.kernel) / c.stride + 1};
}

// Forward cases: every kernel family, kernels 1/3/5, strides 1/2, paddings
// 0/1/2, batch 1 and 3, spatial 1x1, 7x7 and odd sizes, channels 3, 5, 13.
const Case kForwardCases[] = {
    // pointwise (one GEMM) and 1x1 with stride 2 (subsampled im2col)
    {3, 5, 13, 7, 7, 1, 1, 0, 1, true},
    {1, 13, 5, 5, 9, 1, 2, 0, 1, false},
    {3, 3, 5, 1, 1, 1, 1, 0, 1, true},
    // regular k x k (im2col + GEMM)
    {3, 3, 5, 7, 7, 3, 1, 1, 1, true},
    {3, 5, 13, 5, 9, 3, 2, 1, 1, false},
    {1, 3, 5, 7, 7, 3, 1, 0, 1, true},
    {3, 5, 7, 1, 1, 3, 1, 1, 1, true},
    {3, 6, 4, 5, 9, 5, 2, 2, 1, true},
    {1, 5, 3, 9, 5, 5, 1, 0, 1, false},
    {3, 3, 5, 7, 7, 5, 1, 2, 1, true},
    // grouped, not depthwise (a channel multiplier of 2 included)
    {3, 6, 4, 7, 7, 3, 2, 1, 2, true},
    {1, 6, 9, 5, 9, 1, 1, 0, 3, false},
    {3, 4, 8, 7, 7, 3, 1, 2, 4, true},
    // depthwise
    {3, 13, 13, 7, 7, 3, 1, 1, 13, true},
    {3, 5, 5, 5, 9, 5, 2, 2, 5, false},
    {1, 7, 7, 1, 1, 3, 2, 1, 7, true},
    {1, 40, 40, 6, 6, 3, 2, 1, 40, true},
    {3, 3, 3, 7, 7, 5, 1, 2, 3, true},
    // channels 29: full, half and partial register blocks in f32 (16 + 8 + 5)
    // and in f64 (3 * 8 + 4 + 1); stride 3 (more than the kernel for 1x1)
    {2, 29, 29, 6, 5, 3, 1, 1, 29, true},
    {2, 29, 29, 7, 8, 3, 3, 1, 29, false},
    {1, 5, 5, 7, 7, 1, 3, 0, 5, true},
    {2, 3, 4, 8, 7, 3, 3, 2, 1, true},
    // few input channels and whole vectors of output channels (16 f32, 8 f64):
    // the direct loops (the stem's 3 -> 16, 3x3, stride 2, with its unrolled
    // interior), 5x5 (tap loops only), 3 vectors in f32 (6 in f64: GEMM),
    // padding 2 > k / 2 (no full-row interior), stride 3.
    {3, 3, 16, 9, 11, 3, 2, 1, 1, true},
    {2, 1, 32, 7, 6, 5, 1, 2, 1, false},
    {1, 4, 48, 6, 5, 3, 1, 0, 1, true},
    {2, 2, 16, 5, 5, 3, 2, 2, 1, true},
    {1, 3, 16, 8, 7, 3, 3, 1, 1, true},
    // f32 GEMMs whose last column panel is 16 wide (48 = 32 + 16 output
    // channels), pointwise and im2col
    {2, 8, 48, 5, 6, 1, 1, 0, 1, true},
    {2, 8, 48, 5, 6, 3, 1, 1, 1, false},
    // depthwise 3x3 stride 2 wide enough for its register tiles (4 outputs x
    // a vector of 16, or 8, channels: 40 = 16 + 16 + 8)
    {2, 40, 40, 11, 20, 3, 2, 1, 40, true},
};

}  // namespace

TEST_CASE("conv2d: forward in f64 matches the naive reference, both formats") {
  Generator gen(11);
  for (const Case& c : kForwardCases) {
    for (MemoryFormat format : test::both_formats()) {
      CAPTURE(describe(c));
      const std::string format_name = memory_format_name(format);
      CAPTURE(format_name);  // a string: a CAPTURE of the char pointer logs an address
      const Operands o = make_operands(c, gen, DType::f64, format);
      const Tensor y = conv2d(o.input, o.weight, o.bias, c.stride, c.padding, c.groups);
      CHECK(y.shape() == output_shape(c));
      CHECK(y.dtype() == DType::f64);
      CHECK(y.suggest_memory_format() == o.input.suggest_memory_format());
      CHECK(y.is_contiguous(o.input.suggest_memory_format()));
      // Same products summed in another order: a few ulps of sums of at most
      // 5*5*6 = 150 O(1) terms, ~150 * 1.1e-16 ~ 2e-14 at worst.
      CHECK(test::max_relative_error(y, reference_conv2d(o.input, o.weight, o.bias, c.stride,
                                                         c.padding, c.groups)) < 1e-13);
    }
  }
}

TEST_CASE("conv2d: forward in f32 matches the naive reference, both formats") {
  Generator gen(12);
  for (const Case& c : kForwardCases) {
    for (MemoryFormat format : test::both_formats()) {
      CAPTURE(describe(c));
      const std::string format_name = memory_format_name(format);
      CAPTURE(format_name);  // a string: a CAPTURE of the char pointer logs an address
      const Operands o = make_operands(c, gen, DType::f32, format);
      const Tensor y = conv2d(o.input, o.weight, o.bias, c.stride, c.padding, c.groups);
      CHECK(y.dtype() == DType::f32);
      CHECK(y.suggest_memory_format() == o.input.suggest_memory_format());
      // The reference sums the same f32-valued operands exactly (in double),
      // so the only error is f32 accumulation: at most L * eps * sum|terms|
      // with L <= 150 terms, eps = 6e-8 and sum|terms| <= ~sqrt(L) ~ 12 for
      // weights scaled by 1/sqrt(L): ~1e-4 in the worst case; rounding errors
      // are random, so the typical bound is sqrt(L) * eps * 12 ~ 1e-5.
      CHECK(test::max_relative_error(y, reference_conv2d(o.input, o.weight, o.bias, c.stride,
                                                         c.padding, c.groups)) < 1e-5);
    }
  }
}

TEST_CASE("conv2d: strided views as input, and an empty batch") {
  Generator gen(16);
  // Channels 1..5 of a 7-channel tensor, and a transposed (H <-> W) view:
  // neither is dense in NCHW or NHWC, so conv2d copies them first.
  const Tensor wide = test::random_tensor({2, 7, 5, 6}, gen, DType::f64);
  const Tensor weight = test::random_tensor({4, 5, 3, 3}, gen, DType::f64);
  const Tensor bias = test::random_tensor({4}, gen, DType::f64);
  for (const Tensor& view : {wide.narrow(1, 1, 5), wide.narrow(1, 2, 5).transpose(2, 3)}) {
    CAPTURE(shape_str(view.shape()));
    const Tensor y = conv2d(view, weight, bias, 2, 1, 1);
    // As in the f64 forward case: sums of 45 O(1) terms in another order.
    CHECK(test::max_relative_error(y, reference_conv2d(view, weight, bias, 2, 1, 1)) < 1e-13);
  }
  for (MemoryFormat format : test::both_formats()) {
    Tensor empty_batch = zeros({0, 5, 4, 4}, TensorOptions(DType::f64).with_format(format));
    Tensor w = weight.clone();
    empty_batch.set_requires_grad(true);
    w.set_requires_grad(true);
    const Tensor y = conv2d(empty_batch, w, bias, 1, 1, 1);
    CHECK(y.shape() == Shape{0, 4, 4, 4});
    y.backward(zeros({0, 4, 4, 4}, DType::f64));
    // No pixels: the weight gradient is exactly zero.
    CHECK(test::max_relative_error(w.grad(), std::vector<double>(w.numel(), 0.0)) == 0.0);
  }
}

TEST_CASE("conv2d: batch 127 with small spatial size, forward, each kernel family") {
  Generator gen(13);
  const Case cases[] = {
      {127, 6, 5, 5, 5, 1, 1, 0, 1, true},  // pointwise
      {127, 6, 5, 5, 5, 3, 2, 1, 1, true},  // im2col
      {127, 6, 6, 5, 5, 3, 1, 1, 6, true},  // depthwise
      {127, 6, 4, 5, 5, 3, 1, 1, 2, true},  // grouped
  };
  for (const Case& c : cases) {
    for (MemoryFormat format : test::both_formats()) {
      CAPTURE(describe(c));
      const std::string format_name = memory_format_name(format);
      CAPTURE(format_name);  // a string: a CAPTURE of the char pointer logs an address
      const Operands o = make_operands(c, gen, DType::f32, format);
      const Tensor y = conv2d(o.input, o.weight, o.bias, c.stride, c.padding, c.groups);
      CHECK(y.shape() == output_shape(c));
      // f32 accumulation of at most 3*3*6 = 54 terms (see the f32 case above).
      CHECK(test::max_relative_error(y, reference_conv2d(o.input, o.weight, o.bias, c.stride,
                                                         c.padding, c.groups)) < 1e-5);
    }
  }
}

TEST_CASE("conv2d: im2col split into batch chunks gives the same result") {
  // 56x56 output, 3x3 x 64 channels: 3136 * 576 = 1.8M im2col elements per
  // image, so 5 images exceed the 8M-element chunk budget and take two chunks.
  Generator gen(14);
  const Case c{5, 64, 8, 56, 56, 3, 1, 1, 1, true};
  Operands o = make_operands(c, gen, DType::f32, MemoryFormat::channels_last);
  o.input.set_requires_grad(true);
  o.weight.set_requires_grad(true);
  const Tensor y = conv2d(o.input, o.weight, o.bias, c.stride, c.padding, c.groups);
  // f32 accumulation of 576 terms: worst case ~576 * 6e-8 * sqrt(576) ~ 8e-4,
  // typical sqrt(576) * 6e-8 * 24 ~ 3.5e-5.
  CHECK(test::max_relative_error(
            y, reference_conv2d(o.input, o.weight, o.bias, c.stride, c.padding, c.groups)) < 1e-4);

  // Backward across chunks equals the per-image backward (one chunk each):
  // grad_input per image, grad_weight as the sum over images.
  Generator grad_gen(15);
  const Tensor grad_out =
      test::random_tensor(y.shape(), grad_gen, DType::f32, MemoryFormat::channels_last);
  y.backward(grad_out);
  const std::vector<double> grad_input = o.input.grad().to_doubles();
  const std::vector<double> grad_weight = o.weight.grad().to_doubles();
  std::vector<double> weight_sum(grad_weight.size(), 0.0);
  const size_t per_image = grad_input.size() / 5;
  double worst_input = 0.0;
  for (int64_t n = 0; n < 5; ++n) {
    Tensor x_n = o.input.detach().narrow(0, n, 1).contiguous(MemoryFormat::channels_last);
    Tensor w_n = o.weight.detach().clone();
    w_n.set_requires_grad(true);
    x_n.set_requires_grad(true);
    conv2d(x_n, w_n, Tensor(), 1, 1, 1).backward(grad_out.narrow(0, n, 1));
    const std::vector<double> gi = x_n.grad().to_doubles();
    for (size_t i = 0; i < per_image; ++i) {
      const double expected = grad_input[static_cast<size_t>(n) * per_image + i];
      worst_input =
          std::max(worst_input, std::abs(gi[i] - expected) / std::max(std::abs(expected), 1.0));
    }
    const std::vector<double> gw = w_n.grad().to_doubles();
    for (size_t i = 0; i < gw.size(); ++i) weight_sum[i] += gw[i];
  }
  // grad_input: the same f32 products in the same order, identical up to how
  // Eigen blocks the GEMM (a few ulps of sums of 8 * 9 terms).
  CHECK(worst_input < 1e-5);
  // grad_weight: f32 sums of n = 5 * 3136 products of two N(0, 1) values,
  // grouped differently (per chunk vs per image). Values are ~sqrt(n) ~ 125
  // (largest ~400), rounding errors ~sqrt(n) * 6e-8 * sqrt(n) ~ 1e-3 absolute,
  // so relative to the largest value ~3e-6; a chunk lost or counted twice
  // would be off by ~20% of it.
  double largest = 0.0, worst_weight = 0.0;
  const std::vector<double> batched = o.weight.grad().to_doubles();
  for (size_t i = 0; i < batched.size(); ++i) {
    largest = std::max(largest, std::abs(weight_sum[i]));
    worst_weight = std::max(worst_weight, std::abs(batched[i] - weight_sum[i]));
  }
  CHECK(largest > 100.0);
  CHECK(worst_weight / largest < 1e-4);
}

TEST_CASE("conv2d: backward at sizes that run multithreaded matches the naive reference") {
  test::use_openmp_threads(2);
  // gradcheck's tiny sizes run on one thread; these run the parallel loops
  // (per-thread partial sums for the weight and bias gradients).
  Generator gen(17);
  const Case cases[] = {
      {4, 24, 40, 16, 15, 1, 1, 0, 1, true},   // pointwise
      {4, 24, 16, 16, 15, 3, 2, 1, 1, true},   // im2col
      {4, 40, 40, 16, 15, 3, 1, 1, 40, true},  // depthwise
      {4, 37, 37, 16, 15, 5, 2, 2, 37, true},  // depthwise 5x5 s2
      {4, 40, 40, 16, 19, 3, 2, 1, 40, true},  // depthwise 3x3 s2: its register tiles
      {4, 24, 16, 16, 15, 3, 1, 1, 4, true},   // grouped
      {4, 3, 16, 33, 31, 3, 2, 1, 1, true},    // narrow input, direct loops (stem)
      {3, 2, 32, 20, 19, 5, 1, 2, 1, true},    // narrow input, 5x5
  };
  for (const Case& c : cases) {
    for (MemoryFormat format : test::both_formats()) {
      CAPTURE(describe(c));
      const std::string format_name = memory_format_name(format);
      CAPTURE(format_name);  // a string: a CAPTURE of the char pointer logs an address
      Operands o = make_operands(c, gen, DType::f64, format);
      for (Tensor* t : {&o.input, &o.weight, &o.bias}) t->set_requires_grad(true);
      const Tensor y = conv2d(o.input, o.weight, o.bias, c.stride, c.padding, c.groups);
      const Tensor g = test::random_tensor(y.shape(), gen, DType::f64, format);
      y.backward(g);
      const auto expected =
          reference_conv2d_backward(o.input, o.weight, g, c.stride, c.padding, c.groups);
      // f64 sums of up to 4 * 16 * 15 = 960 O(1) products (bias, weight) in
      // another order: ~960 * 1.1e-16 ~ 1e-13 at worst.
      CHECK(test::max_relative_error(o.input.grad(), expected[0]) < 1e-12);
      CHECK(test::max_relative_error(o.weight.grad(), expected[1]) < 1e-12);
      CHECK(test::max_relative_error(o.bias.grad(), expected[2]) < 1e-12);
    }
  }
}

TEST_CASE("conv2d: narrow-input direct loops, f32 backward matches the reference") {
  test::use_openmp_threads(2);
  // The stem's f32 weight gradient comes from the direct loops' slices (the
  // input gradient from the GEMM path); f32 is what training runs.
  Generator gen(18);
  const Case cases[] = {
      {4, 3, 16, 33, 31, 3, 2, 1, 1, true},  // 1 vector, unrolled interior
      {3, 2, 32, 20, 19, 5, 1, 2, 1, true},  // 2 vectors, 5x5
  };
  for (const Case& c : cases) {
    for (MemoryFormat format : test::both_formats()) {
      CAPTURE(describe(c));
      const std::string format_name = memory_format_name(format);
      CAPTURE(format_name);  // a string: a CAPTURE of the char pointer logs an address
      Operands o = make_operands(c, gen, DType::f32, format);
      for (Tensor* t : {&o.input, &o.weight, &o.bias}) t->set_requires_grad(true);
      const Tensor y = conv2d(o.input, o.weight, o.bias, c.stride, c.padding, c.groups);
      CHECK(test::max_relative_error(y, reference_conv2d(o.input, o.weight, o.bias, c.stride,
                                                         c.padding, c.groups)) < 1e-5);
      const Tensor g = test::random_tensor(y.shape(), gen, DType::f32, format);
      y.backward(g);
      // The reference sums the f32 values exactly in double. The weight and
      // bias gradients are f32 sums of up to 4 * 17 * 16 = 1088 products of
      // N(0, 1) values (|sum| ~ 33): rounding ~sqrt(1088) * 6e-8 * 33 ~ 7e-5
      // absolute, relative to max(|expected|, 1) below 1e-4; one pixel lost
      // or counted twice would change a sum by ~1.
      const auto expected =
          reference_conv2d_backward(o.input, o.weight, g, c.stride, c.padding, c.groups);
      CHECK(test::max_relative_error(o.input.grad(), expected[0]) < 1e-5);
      CHECK(test::max_relative_error(o.weight.grad(), expected[1]) < 1e-4);
      CHECK(test::max_relative_error(o.bias.grad(), expected[2]) < 1e-4);
    }
  }
}

TEST_CASE("conv2d: gradcheck w.r.t. input, weight and bias, every kernel family, both formats") {
  Generator gen(21);
  const Case cases[] = {
      {2, 5, 3, 5, 6, 1, 1, 0, 1, true},    // pointwise
      {2, 5, 3, 7, 5, 1, 2, 0, 1, true},    // 1x1 stride 2
      {2, 3, 4, 5, 6, 3, 1, 1, 1, true},    // 3x3 s1
      {2, 3, 4, 7, 6, 3, 2, 1, 1, false},   // 3x3 s2, no bias
      {2, 3, 2, 7, 7, 5, 2, 2, 1, true},    // 5x5 s2 pad 2
      {2, 5, 5, 6, 7, 3, 1, 1, 5, true},    // depthwise 3x3 s1
      {2, 5, 5, 7, 7, 3, 2, 1, 5, true},    // depthwise 3x3 s2
      {2, 6, 6, 7, 5, 5, 1, 2, 6, false},   // depthwise 5x5 s1
      {2, 6, 6, 7, 7, 5, 2, 2, 6, true},    // depthwise 5x5 s2
      {2, 4, 6, 5, 6, 3, 1, 1, 2, true},    // grouped 3x3
      {2, 6, 3, 5, 5, 1, 1, 0, 3, true},    // grouped 1x1
      {1, 3, 4, 1, 1, 3, 1, 1, 1, true},    // 1x1 spatial, padded 3x3
      {2, 3, 2, 5, 6, 3, 2, 2, 1, true},    // 3x3 s2, padding 2 > k / 2
      {2, 4, 4, 5, 6, 3, 2, 2, 4, true},    // depthwise 3x3 s2, padding 2
      {2, 3, 2, 7, 6, 3, 3, 1, 1, true},    // stride 3
      {2, 3, 8, 7, 6, 3, 2, 1, 1, true},    // narrow input, direct loops (f64: 1 vector)
      {1, 2, 16, 6, 5, 5, 1, 2, 1, false},  // narrow input, 5x5, 2 vectors
  };
  for (const Case& c : cases) {
    for (MemoryFormat format : test::both_formats()) {
      CAPTURE(describe(c));
      const std::string format_name = memory_format_name(format);
      CAPTURE(format_name);  // a string: a CAPTURE of the char pointer logs an address
      Operands o = make_operands(c, gen, DType::f64, format);
      std::vector<Tensor> wrt{o.input, o.weight};
      if (c.bias) wrt.push_back(o.bias);
      for (Tensor& t : wrt) t.set_requires_grad(true);
      // conv2d is linear in each argument: no kinks, default tolerance 1e-6
      // (gradcheck.h: truncation ~1e-12, rounding ~1e-10).
      B3_CHECK_GRADCHECK(gradcheck(
          [&] { return conv2d(o.input, o.weight, o.bias, c.stride, c.padding, c.groups); }, wrt));
    }
  }
}

TEST_CASE("conv2d: backward computes only what requires grad, in the input's format") {
  Generator gen(22);
  for (MemoryFormat format : test::both_formats()) {
    const std::string format_name = memory_format_name(format);
    CAPTURE(format_name);  // a string: a CAPTURE of the char pointer logs an address
    for (int64_t groups : {int64_t{1}, int64_t{4}}) {
      CAPTURE(groups);
      Tensor x = test::random_tensor({2, 4, 5, 5}, gen, DType::f64, format);
      Tensor w = test::random_tensor({4, 4 / groups, 3, 3}, gen, DType::f64);
      Tensor b = test::random_tensor({4}, gen, DType::f64);
      const Tensor g = test::random_tensor({2, 4, 3, 3}, gen, DType::f64, format);

      // Only the input: no weight or bias gradient appears.
      x.set_requires_grad(true);
      Tensor y = conv2d(x, w, b, 2, 1, groups);
      const std::vector<Tensor> grads = y.grad_fn()->backward(g);
      REQUIRE(grads.size() == 3);
      CHECK(grads[0].defined());
      CHECK(grads[0].suggest_memory_format() == x.suggest_memory_format());
      CHECK_FALSE(grads[1].defined());
      CHECK_FALSE(grads[2].defined());
      y.backward(g);
      CHECK(x.grad().defined());
      CHECK_FALSE(w.grad().defined());

      // Only the weight (input a plain tensor): the input gets nothing.
      Tensor x2 = x.detach().clone();
      w.set_requires_grad(true);
      conv2d(x2, w, Tensor(), 2, 1, groups).backward(g);
      CHECK(w.grad().defined());
      CHECK_FALSE(x2.grad().defined());
      // And that weight gradient matches the one computed alongside the input's.
      Tensor x3 = x.detach().clone();
      x3.set_requires_grad(true);
      Tensor w3 = w.detach().clone();
      w3.set_requires_grad(true);
      conv2d(x3, w3, Tensor(), 2, 1, groups).backward(g);
      // Identical arithmetic both times.
      CHECK(test::max_relative_error(w.grad(), w3.grad()) == 0.0);
    }
  }
}

TEST_CASE("conv2d: no recording under NoGradGuard or without grads") {
  Generator gen(23);
  Tensor x = test::random_tensor({1, 3, 4, 4}, gen, DType::f32);
  Tensor w = test::random_tensor({2, 3, 3, 3}, gen, DType::f32);
  CHECK_FALSE(conv2d(x, w, Tensor(), 1, 1, 1).requires_grad());
  w.set_requires_grad(true);
  CHECK(conv2d(x, w, Tensor(), 1, 1, 1).requires_grad());
  NoGradGuard no_grad;
  CHECK_FALSE(conv2d(x, w, Tensor(), 1, 1, 1).requires_grad());
}

TEST_CASE("conv2d: wrong arguments are refused with clear messages") {
  const Tensor x = zeros({2, 5, 8, 8});
  const Tensor w16 = zeros({4, 16, 3, 3});
  const Tensor w = zeros({4, 5, 3, 3});
  const auto invalid = [](auto&& call, const char* text) {
    CHECK_THROWS_WITH_AS(call(), doctest::Contains(text), std::invalid_argument);
  };
  invalid([&] { return conv2d(x, w16, Tensor()); },
          "conv2d: input has 5 channels, weight expects 16");
  invalid(
      [&] {
        return conv2d(zeros({2, 6, 8, 8}), zeros({4, 2, 3, 3}), Tensor(), 1, 0, 2);
      },
      "conv2d: input has 6 channels, weight expects 4");
  invalid(
      [&] {
        return conv2d(zeros({5, 8, 8}), w, Tensor());
      },
      "conv2d: input must be 4-D [N, C, H, W], got [5, 8, 8]");
  invalid([&] { return conv2d(x, zeros({4, 5, 3}), Tensor()); }, "conv2d: weight must be 4-D");
  invalid(
      [&] {
        return conv2d(x, zeros({4, 5, 3, 1}), Tensor());
      },
      "conv2d: only square kernels are supported");
  invalid(
      [&] {
        return conv2d(zeros({1, 4, 8, 8}), zeros({5, 2, 3, 3}), Tensor(), 1, 0, 2);
      },
      "conv2d: weight has 5 output channels, not divisible by groups 2");
  invalid([&] { return conv2d(x, w, Tensor(), 0); }, "conv2d: stride must be >= 1, got 0");
  invalid([&] { return conv2d(x, w, Tensor(), 1, -1); }, "conv2d: padding must be >= 0, got -1");
  invalid([&] { return conv2d(x, w, Tensor(), 1, 0, 0); }, "conv2d: groups must be >= 1, got 0");
  invalid([&] { return conv2d(zeros({1, 5, 2, 3}), w, Tensor()); }, "smaller than the 3x3 kernel");
  invalid(
      [&] {
        return conv2d(x, zeros({4, 5, 3, 3}, DType::f64), Tensor());
      },
      "conv2d: weight dtype f64 differs from input dtype f32");
  invalid([&] { return conv2d(x, w, zeros({5})); }, "conv2d: bias must have shape [4]");
  invalid([&] { return conv2d(x, w, zeros({4}, DType::f64)); }, "conv2d: bias dtype f64");
  invalid(
      [&] {
        return conv2d(zeros({2, 5, 8, 8}, DType::i32), zeros({4, 5, 3, 3}, DType::i32), Tensor());
      },
      "conv2d: dtype i32 is not supported on the CPU");
  // Padding can make a small input big enough: 2x3 padded by 1 is 4x5 >= 3.
  CHECK(conv2d(zeros({1, 5, 2, 3}), w, Tensor(), 1, 1).shape() == Shape{1, 4, 2, 3});
}

TEST_CASE("Conv2d module: parameters, shapes, PyTorch's default init, forward") {
  Generator gen(31);
  Conv2dOptions options;
  options.in_channels = 6;
  options.out_channels = 10;
  options.kernel_size = 3;
  options.stride = 2;
  options.padding = 1;
  options.groups = 2;
  Conv2d conv(options, gen);
  const auto named = conv.named_parameters();
  REQUIRE(named.size() == 2);
  CHECK(named[0].first == "weight");
  CHECK(named[1].first == "bias");
  CHECK(conv.weight.shape() == Shape{10, 3, 3, 3});
  CHECK(conv.bias.shape() == Shape{10});
  CHECK(conv.weight.requires_grad());
  CHECK(conv.parameter_count() == 10 * 3 * 9 + 10);
  CHECK(conv.describe() == "Conv2d(6, 10, kernel 3, stride 2, padding 1, groups 2)");

  // U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = 3 * 3 * 3 = 27, for both;
  // 270 draws also reach most of the range (max |w| > 0.8 bound).
  const double bound = 1.0 / std::sqrt(27.0);
  for (const Tensor& p : {conv.weight, conv.bias}) {
    double largest = 0.0;
    const std::vector<double> values = p.to_doubles();
    for (double v : values) largest = std::max(largest, std::abs(v));
    CHECK(largest <= bound);
    if (p.numel() > 100) CHECK(largest > 0.8 * bound);
    // The bias too is drawn, not left at zero: its 10 draws are distinct and
    // reach past 0.3 bound (all below it: probability 0.3^10 = 6e-6).
    CHECK(largest > 0.3 * bound);
    CHECK(std::set<double>(values.begin(), values.end()).size() == values.size());
  }

  const Tensor x = test::random_tensor({3, 6, 7, 7}, gen, DType::f32, MemoryFormat::channels_last);
  CHECK(test::max_relative_error(conv(x), conv2d(x, conv.weight, conv.bias, 2, 1, 2)) == 0.0);
  CHECK(conv(x).shape() == Shape{3, 10, 4, 4});

  // Constructed twice from the same seed: the same weights.
  Generator again(31);
  Conv2d twin(options, again);
  CHECK(test::max_relative_error(twin.weight, conv.weight) == 0.0);
}

TEST_CASE("Conv2d module: bias = false, gradcheck in double, bad options") {
  Generator gen(32);
  Conv2dOptions options;
  options.in_channels = 5;
  options.out_channels = 5;
  options.kernel_size = 3;
  options.padding = 1;
  options.groups = 5;
  options.bias = false;
  Conv2d depthwise(options, gen);
  REQUIRE(depthwise.named_parameters().size() == 1);
  CHECK(depthwise.named_parameters()[0].first == "weight");
  CHECK_FALSE(depthwise.bias.defined());
  CHECK(depthwise.describe() == "Conv2d(5, 5, kernel 3, stride 1, padding 1, groups 5, no bias)");
  // fan_in = 1 * 3 * 3.
  for (double v : depthwise.weight.to_doubles()) CHECK(std::abs(v) <= 1.0 / 3.0);

  depthwise.to(DType::f64);
  for (MemoryFormat format : test::both_formats()) {
    const Tensor x = test::random_tensor({2, 5, 5, 6}, gen, DType::f64, format);
    B3_CHECK_GRADCHECK(gradcheck_module(depthwise, x));
  }

  Conv2dOptions bad = options;
  bad.groups = 2;
  CHECK_THROWS_WITH_AS(Conv2d(bad, gen),
                       doctest::Contains("Conv2d: groups 2 must be >= 1 and divide"),
                       std::invalid_argument);
  bad = options;
  bad.kernel_size = 0;
  CHECK_THROWS_WITH_AS(Conv2d(bad, gen), doctest::Contains("Conv2d: kernel_size must be >= 1"),
                       std::invalid_argument);
}
