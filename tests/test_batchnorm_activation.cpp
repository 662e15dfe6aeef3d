// batch_norm_activation (BatchNorm2d + none/ReLU/Hardswish as one op): output,
// gradients and running statistics against the unfused sequence batch_norm2d
// then relu/hardswish, and the forward against a plain double reference; f32
// and f64, both memory formats, training and evaluation; gradcheck in double
// w.r.t. input, weight and bias; PyTorch's derivatives at the kinks; the
// MobileNetV3 ConvNormActivation block (fused forward) against its children
// run in sequence; the in-place inference form and the block's use of it;
// argument errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "autograd/grad_mode.h"
#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "layers/activations.h"
#include "layers/batchnorm2d.h"
#include "models/mobilenet_v3.h"
#include "tensor/ops.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

const Activation kActivations[] = {Activation::none, Activation::relu, Activation::hardswish};

// Batch 1 with H*W > 1, batch 3, 1x1 spatial, 7x7, odd sizes, C not a multiple
// of 8 and C = 24, 40 (the NHWC reductions' 16- and 8-channel blocks and the
// scalar tail), and one shape past the parallel threshold whose f64 output
// (8.2 MB) is written with streaming stores (f32: 4.1 MB, ordinary stores).
const Shape kShapes[] = {{1, 3, 5, 7},  {3, 5, 4, 4},    {4, 13, 1, 1},
                         {2, 16, 7, 7}, {3, 5, 3, 5},    {2, 24, 5, 5},
                         {2, 40, 6, 3}, {8, 16, 17, 17}, {4, 40, 80, 80}};
// Smaller shapes for gradcheck (each point costs three forward passes).
const Shape kGradShapes[] = {{1, 3, 3, 5}, {3, 5, 2, 3}, {4, 13, 1, 1}, {2, 3, 7, 7}};

using test::from_values;
using test::normal_values;

Tensor activate(const Tensor& y, Activation activation) {
  switch (activation) {
    case Activation::relu: return relu(y);
    case Activation::hardswish: return hardswish(y);
    case Activation::none:
    case Activation::hardsigmoid: break;  // not fused
  }
  return y;
}

// Per-channel parameters and running statistics. Weight ~ N(0.5, 1.5) and
// bias ~ N(0, 1) put the normalized values on both sides of ReLU's kink and
// across Hardswish's whole ramp [-3, 3] and beyond it on both sides.
using ChannelState = test::BatchNormState;
ChannelState random_state(int64_t channels, Generator& gen) {
  return test::random_batch_norm_state(channels, gen, 0.5, 1.5, 1.0);
}

// One call of the op (fused) or of the sequence (unfused) on fresh copies of
// the same values, then a backward with `g`: everything the call produces.
struct Run {
  Tensor output, grad_input, grad_weight, grad_bias, running_mean, running_var, counter;
};

Run run_once(bool fused, Activation activation, const std::vector<double>& xv, const Shape& shape,
             const ChannelState& s, DType dtype, MemoryFormat format, bool training,
             const Tensor& g) {
  const int64_t channels = shape[1];
  Run r;
  Tensor x = from_values(xv, shape, dtype, format);
  Tensor weight = from_values(s.weight, {channels}, dtype);
  Tensor bias = from_values(s.bias, {channels}, dtype);
  x.set_requires_grad(true);
  weight.set_requires_grad(true);
  bias.set_requires_grad(true);
  r.running_mean = from_values(s.running_mean, {channels}, dtype);
  r.running_var = from_values(s.running_var, {channels}, dtype);
  r.counter = zeros({}, DType::i64);
  const double momentum = 0.01, eps = 1e-3;  // MobileNetV3's
  r.output = fused ? batch_norm_activation(x, weight, bias, r.running_mean, r.running_var,
                                           r.counter, training, momentum, eps, activation)
                   : activate(batch_norm2d(x, weight, bias, r.running_mean, r.running_var,
                                           r.counter, training, momentum, eps),
                              activation);
  r.output.backward(g);
  r.grad_input = x.grad();
  r.grad_weight = weight.grad();
  r.grad_bias = bias.grad();
  return r;
}

// Plain loops in double over logical NCHW values: act((x - mean) / sqrt(var +
// eps) * weight + bias) with the batch's biased variance or the running one.
std::vector<double> reference_forward(const std::vector<double>& x, const Shape& shape,
                                      const ChannelState& s, bool training, double eps,
                                      Activation activation) {
  const int64_t n = shape[0], channels = shape[1], hw = shape[2] * shape[3];
  const double m = static_cast<double>(n * hw);
  std::vector<double> z(x.size());
  for (int64_t c = 0; c < channels; ++c) {
    const size_t cu = static_cast<size_t>(c);
    double mean = s.running_mean[cu], var = s.running_var[cu];
    if (training) {
      double total = 0, squares = 0;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < hw; ++j)
          total += x[static_cast<size_t>((i * channels + c) * hw + j)];
      mean = total / m;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < hw; ++j) {
          const double d = x[static_cast<size_t>((i * channels + c) * hw + j)] - mean;
          squares += d * d;
        }
      var = squares / m;
    }
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < hw; ++j) {
        const size_t e = static_cast<size_t>((i * channels + c) * hw + j);
        const double y = (x[e] - mean) / std::sqrt(var + eps) * s.weight[cu] + s.bias[cu];
        switch (activation) {
          case Activation::none: z[e] = y; break;
          case Activation::relu: z[e] = y > 0 ? y : 0; break;
          case Activation::hardswish: z[e] = y * std::clamp(y + 3, 0.0, 6.0) / 6; break;
          case Activation::hardsigmoid: break;  // not fused
        }
      }
  }
  return z;
}

}  // namespace

TEST_CASE("batch_norm_activation: forward matches a plain double reference") {
  Generator gen(31);
  for (Activation activation : kActivations) {
    for (bool training : {true, false}) {
      for (MemoryFormat format : test::both_formats()) {
        const Shape shape{3, 11, 5, 4};
        CAPTURE(activation_name(activation));
        CAPTURE(training);
        CAPTURE(memory_format_name(format));
        const ChannelState s = random_state(11, gen);
        const std::vector<double> xv = normal_values(shape_numel(shape), gen, 1.0, 2.0);
        const Tensor g = zeros(shape, DType::f64);
        const Run r = run_once(true, activation, xv, shape, s, DType::f64, format, training, g);
        CHECK(r.output.strides() == from_values(xv, shape, DType::f64, format).strides());
        // Double throughout: statistics summed in another order (~1e-16 * 60
        // terms) and a multiply-add of terms ~10: ~1e-14, far below 1e-12.
        CHECK(test::max_relative_error(
                  r.output, reference_forward(xv, shape, s, training, 1e-3, activation)) < 1e-12);
      }
    }
  }
}

TEST_CASE("batch_norm_activation: output, gradients and running statistics equal the sequence") {
  test::use_openmp_threads(2);  // the larger shapes run the parallel kernels
  Generator gen(32);
  for (const Shape& shape : kShapes) {
    for (Activation activation : kActivations) {
      for (MemoryFormat format : test::both_formats()) {
        for (DType dtype : {DType::f32, DType::f64}) {
          for (bool training : {true, false}) {
            CAPTURE(shape_str(shape));
            CAPTURE(activation_name(activation));
            CAPTURE(memory_format_name(format));
            CAPTURE(dtype_name(dtype));
            CAPTURE(training);
            const ChannelState s = random_state(shape[1], gen);
            const std::vector<double> xv = normal_values(shape_numel(shape), gen, 1.0, 2.0);
            const Tensor g =
                from_values(normal_values(shape_numel(shape), gen, 0.0, 1.0), shape, dtype, format);
            const Run fused = run_once(true, activation, xv, shape, s, dtype, format, training, g);
            const Run unfused =
                run_once(false, activation, xv, shape, s, dtype, format, training, g);
            CHECK(fused.output.strides() == unfused.output.strides());
            CHECK(fused.grad_input.strides() == unfused.grad_input.strides());
            // The fused kernels evaluate the same expressions in the same
            // precision (y = x * scale + shift and act'(y) in T, sums in double
            // in the same order); only the compiler's contraction of a multiply
            // and an add into one FMA may differ (one rounding fewer). Input
            // gradient gain * (gy - mean_g - (x - mean) * projection): one
            // rounding of the bracket (terms up to ~10) times |gain| <~ 3:
            // f32 0.5 ulp(10) * 3 = 1.4e-6 (checked at 4e-6), f64 2.7e-15
            // (checked at 1e-12). Measured: f32 2e-7, f64 3e-16; the outputs
            // are identical.
            const double tolerance = dtype == DType::f64 ? 1e-12 : 4e-6;
            CHECK(test::max_relative_error(fused.output, unfused.output) < tolerance);
            CHECK(test::max_relative_error(fused.grad_input, unfused.grad_input) < tolerance);
            // dweight and dbias: double sums of the same values dL/dy in the
            // same order, rounded once to T (f32 6e-8 relative; f64 sums may
            // differ by a contraction, ~1e-16 * M relative): 1e-6 and 1e-12.
            const double param_tolerance = dtype == DType::f64 ? 1e-12 : 1e-6;
            CHECK(test::max_relative_error(fused.grad_weight, unfused.grad_weight) <
                  param_tolerance);
            CHECK(test::max_relative_error(fused.grad_bias, unfused.grad_bias) < param_tolerance);
            // Same statistics code, same inputs: identical buffers.
            CHECK(test::max_relative_error(fused.running_mean, unfused.running_mean) == 0.0);
            CHECK(test::max_relative_error(fused.running_var, unfused.running_var) == 0.0);
            CHECK(fused.counter.item() == unfused.counter.item());
            CHECK(fused.counter.item() == (training ? 1 : 0));
          }
        }
      }
    }
  }
}

TEST_CASE("batch_norm_activation: one autograd node, named after the activation") {
  Generator gen(33);
  Tensor x = test::random_tensor({2, 4, 3, 3}, gen, DType::f32);
  x.set_requires_grad(true);
  const Tensor relu_out = batch_norm_activation(x, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(),
                                                true, 0.1, 1e-5, Activation::relu);
  REQUIRE(relu_out.grad_fn());
  CHECK(relu_out.grad_fn()->name() == "BatchNorm2dReluBackward");
  REQUIRE(relu_out.grad_fn()->inputs.size() == 3);
  CHECK(relu_out.grad_fn()->inputs[0].grad_fn() == x.grad_fn());  // straight to x: a leaf
  const Tensor hs_out = batch_norm_activation(x, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(),
                                              true, 0.1, 1e-5, Activation::hardswish);
  CHECK(hs_out.grad_fn()->name() == "BatchNorm2dHardswishBackward");
  const Tensor plain = batch_norm_activation(x, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(),
                                             true, 0.1, 1e-5, Activation::none);
  CHECK(plain.grad_fn()->name() == "BatchNorm2dBackward");
  NoGradGuard no_grad;
  CHECK_FALSE(batch_norm_activation(x, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1,
                                    1e-5, Activation::relu)
                  .grad_fn());
}

TEST_CASE("batch_norm_activation: gradcheck w.r.t. input, weight and bias") {
  Generator gen(34);
  GradcheckOptions options;
  options.max_points_per_tensor = 40;
  for (Activation activation : kActivations) {
    for (bool training : {true, false}) {
      for (const Shape& shape : kGradShapes) {
        for (MemoryFormat format : test::both_formats()) {
          CAPTURE(activation_name(activation));
          CAPTURE(training);
          CAPTURE(shape_str(shape));
          CAPTURE(memory_format_name(format));
          const int64_t channels = shape[1];
          const ChannelState s = random_state(channels, gen);
          Tensor x = test::random_tensor(shape, gen, DType::f64, format, 2.0);
          Tensor weight = from_values(s.weight, {channels}, DType::f64);
          Tensor bias = from_values(s.bias, {channels}, DType::f64);
          x.set_requires_grad(true);
          weight.set_requires_grad(true);
          bias.set_requires_grad(true);
          // Running statistics given too (training moves them every call;
          // that must not disturb the gradient).
          Tensor running_mean = from_values(s.running_mean, {channels}, DType::f64);
          Tensor running_var = from_values(s.running_var, {channels}, DType::f64);
          // Points within ~eps of a kink (ReLU at 0, Hardswish at +-3) are
          // skipped by gradcheck; B3_CHECK_GRADCHECK insists they are rare.
          B3_CHECK_GRADCHECK(gradcheck(
              [&] {
                return batch_norm_activation(x, weight, bias, running_mean, running_var, Tensor(),
                                             training, 0.01, 1e-3, activation);
              },
              {x, weight, bias}, options));
        }
      }
    }
  }
}

TEST_CASE("batch_norm_activation: derivatives at the kinks are PyTorch's") {
  // Evaluation with running mean 0, running var + eps = 0.75 + 0.25 = 1 and
  // weight 1, bias 0: y = x exactly, at ReLU's and Hardswish's kinks.
  // relu'(0) = 0; hardswish'(-3) = -1/2, hardswish'(0) = 1/2, hardswish'(3) = 3/2.
  const std::vector<double> points{-3.0, 0.0, 3.0};
  const std::pair<Activation, std::vector<double>> cases[] = {
      {Activation::relu, {0.0, 0.0, 1.0}},
      {Activation::hardswish, {-0.5, 0.5, 1.5}},
  };
  for (const auto& kink_case : cases) {
    const Activation activation = kink_case.first;           // not a structured binding: CAPTURE's
    const std::vector<double>& expected = kink_case.second;  // lambda captures it (clang 14)
    for (DType dtype : {DType::f32, DType::f64}) {
      CAPTURE(activation_name(activation));
      CAPTURE(dtype_name(dtype));
      Tensor x = from_values(points, {1, 1, 1, 3}, dtype);
      x.set_requires_grad(true);
      const Tensor z =
          batch_norm_activation(x, ones({1}, dtype), zeros({1}, dtype), zeros({1}, dtype),
                                full({1}, 0.75, dtype), Tensor(), false, 0.1, 0.25, activation);
      z.backward(ones({1, 1, 1, 3}, dtype));
      CHECK(test::max_relative_error(x.grad(), expected) == 0.0);  // exact: no rounding
    }
  }
}

TEST_CASE("ConvNormActivation: the fused forward equals its children in sequence") {
  // Two blocks built from the same seed; one runs its own (fused) forward, the
  // other forward_unfused (its conv, BatchNorm2d and activation children in turn).
  using Act = Activation;
  struct Block {
    int64_t in, out, kernel, stride, groups;
    Act activation;
  };
  const Block blocks[] = {{3, 16, 3, 2, 1, Act::hardswish},
                          {16, 16, 3, 1, 16, Act::relu},
                          {24, 40, 1, 1, 1, Act::none}};
  for (const Block& b : blocks) {
    for (MemoryFormat format : test::both_formats()) {
      for (DType dtype : {DType::f32, DType::f64}) {
        CAPTURE(b.in);
        CAPTURE(memory_format_name(format));
        CAPTURE(dtype_name(dtype));
        Generator init_a(7), init_b(7), gen(35);
        ConvNormActivation fused(b.in, b.out, b.kernel, b.stride, b.groups, b.activation, 1e-3,
                                 0.01, init_a);
        ConvNormActivation unfused(b.in, b.out, b.kernel, b.stride, b.groups, b.activation, 1e-3,
                                   0.01, init_b);
        // BatchNorm weight and bias away from 1 and 0, the same in both.
        const std::vector<double> w = normal_values(b.out, gen, 0.5, 1.5);
        const std::vector<double> bias = normal_values(b.out, gen, 0.0, 1.0);
        for (ConvNormActivation* m : {&fused, &unfused}) {
          m->to(dtype);
          m->to(format);
          for (auto& [name, p] : m->named_parameters()) {
            if (name == "1.weight") p.copy_(from_values(w, {b.out}, dtype));
            if (name == "1.bias") p.copy_(from_values(bias, {b.out}, dtype));
          }
        }
        // Two training steps, then evaluation with the running statistics.
        for (int step = 0; step < 3; ++step) {
          CAPTURE(step);
          const bool training = step < 2;
          fused.train(training);
          unfused.train(training);
          fused.zero_grad();
          unfused.zero_grad();
          const Tensor x = test::random_tensor({2, b.in, 9, 9}, gen, dtype, format);
          const Tensor za = fused.forward(x);
          const Tensor zb = unfused.forward_unfused(x);
          REQUIRE(za.shape() == zb.shape());
          CHECK(za.strides() == zb.strides());
          const Tensor g = test::random_tensor(za.shape(), gen, dtype, format);
          za.backward(g);
          zb.backward(g);
          // Output and BatchNorm gradients as in the functional test (f32
          // 4e-6, f64 1e-12). The convolution's gradients are sums over
          // 2 * 81 pixels (x taps) of products with that input gradient, whose
          // elements differ by <= 1.4e-6 independently: |sum| bound ~ 162 *
          // 1.4e-6 * |x| ~ 2e-4 worst case, ~sqrt(162) * 1.4e-6 * |x| ~ 2e-5
          // typical, relative to max(|dw|, 1) where |dw| ~ sqrt(162) * 3 ~ 40:
          // checked at 1e-5 in f32 (measured 2.5e-6); f64 1e-12 (measured 3e-15).
          const double tolerance = dtype == DType::f64 ? 1e-12 : 1e-5;
          CHECK(test::max_relative_error(za, zb) < tolerance);
          const auto pa = fused.named_parameters(), pb = unfused.named_parameters();
          REQUIRE(pa.size() == pb.size());
          for (size_t i = 0; i < pa.size(); ++i) {
            CAPTURE(pa[i].first);
            CHECK(pa[i].first == pb[i].first);
            CHECK(test::max_relative_error(pa[i].second.grad(), pb[i].second.grad()) < tolerance);
          }
          const auto ba = fused.named_buffers(), bb = unfused.named_buffers();
          REQUIRE(ba.size() == bb.size());
          for (size_t i = 0; i < ba.size(); ++i) {
            CAPTURE(ba[i].first);
            CHECK(ba[i].first == bb[i].first);
            CHECK(test::max_relative_error(ba[i].second, bb[i].second) == 0.0);
          }
        }
      }
    }
  }
}

TEST_CASE("batch_norm_activation_inference_: in place, the evaluation op's values") {
  // Every shape (the parallel and streaming-store one included), both formats
  // and dtypes, every fused activation: the in-place form must give exactly
  // the out-of-place op's values (same kernel, same order of operations) and
  // return the input's own memory.
  Generator gen(41);
  for (const Shape& shape : kShapes) {
    for (MemoryFormat format : test::both_formats()) {
      for (DType dtype : {DType::f32, DType::f64}) {
        for (Activation activation : kActivations) {
          CAPTURE(shape_str(shape));
          CAPTURE(memory_format_name(format));
          CAPTURE(dtype_name(dtype));
          CAPTURE(activation_name(activation));
          const int64_t channels = shape[1];
          const ChannelState s = random_state(channels, gen);
          const Tensor weight = from_values(s.weight, {channels}, dtype);
          const Tensor bias = from_values(s.bias, {channels}, dtype);
          const Tensor mean = from_values(s.running_mean, {channels}, dtype);
          const Tensor var = from_values(s.running_var, {channels}, dtype);
          const std::vector<double> xv = normal_values(shape_numel(shape), gen, 1.0, 2.0);
          const Tensor expected =
              batch_norm_activation(from_values(xv, shape, dtype, format), weight, bias, mean, var,
                                    Tensor(), false, 0.01, 1e-3, activation);
          Tensor x = from_values(xv, shape, dtype, format);
          const Tensor y =
              batch_norm_activation_inference_(x, weight, bias, mean, var, 1e-3, activation);
          CHECK(y.data_ptr() == x.data_ptr());
          CHECK(y.strides() == expected.strides());
          CHECK(test::max_relative_error(y, expected) == 0.0);
          CHECK(test::max_relative_error(mean, from_values(s.running_mean, {channels}, dtype)) ==
                0.0);  // evaluation leaves the running statistics alone
        }
      }
    }
  }
}

TEST_CASE("batch_norm_activation_inference_: refused where overwriting would be wrong") {
  Generator gen(42);
  const Tensor mean = zeros({5}), var = ones({5});
  Tensor x = test::random_tensor({2, 5, 3, 3}, gen, DType::f32);
  x.set_requires_grad(true);
  CHECK_THROWS_WITH_AS(
      batch_norm_activation_inference_(x, Tensor(), Tensor(), mean, var, 1e-5, Activation::relu),
      doctest::Contains("would overwrite a tensor autograd needs"), std::invalid_argument);
  {
    NoGradGuard no_grad;  // the same call without recording is accepted
    CHECK_NOTHROW(
        batch_norm_activation_inference_(x, Tensor(), Tensor(), mean, var, 1e-5, Activation::relu));
  }
  // A view that is not dense: writing it in place would also write through to
  // the tensor it views, which the caller did not offer.
  const Tensor wide = test::random_tensor({2, 5, 3, 6}, gen, DType::f32);
  const Tensor view = wide.narrow(3, 0, 3);
  NoGradGuard no_grad;
  CHECK_THROWS_WITH_AS(
      batch_norm_activation_inference_(view, Tensor(), Tensor(), mean, var, 1e-5, Activation::relu),
      doctest::Contains("the input must be dense"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      batch_norm_activation_inference_(test::random_tensor({2, 5, 3, 3}, gen, DType::f32), Tensor(),
                                       Tensor(), Tensor(), Tensor(), 1e-5, Activation::relu),
      doctest::Contains("running_mean and running_var must be defined in evaluation mode"),
      std::invalid_argument);
}

TEST_CASE("ConvNormActivation: inference (eval, no grad) equals the recorded eval forward") {
  // Under NoGradGuard in evaluation mode the block normalizes in its
  // convolution's epilogue; with gradients on it takes the ordinary path.
  // Both must give the same values, in both formats.
  Generator init(8), gen(43);
  ConvNormActivation block(16, 24, 1, 1, 1, Activation::hardswish, 1e-3, 0.01, init);
  for (int step = 0; step < 2; ++step) {  // running statistics away from 0 and 1
    sum(block.forward(test::random_tensor({4, 16, 7, 7}, gen, DType::f32))).backward();
  }
  block.train(false);
  for (MemoryFormat format : test::both_formats()) {
    CAPTURE(memory_format_name(format));
    block.to(format);
    const Tensor x = test::random_tensor({3, 16, 7, 7}, gen, DType::f32, format);
    const Tensor recorded = block.forward(x);
    REQUIRE(recorded.requires_grad());
    NoGradGuard no_grad;
    const Tensor inference = block.forward(x);
    CHECK_FALSE(inference.requires_grad());
    CHECK(test::max_relative_error(inference, recorded) == 0.0);
    CHECK(test::max_relative_error(block.forward_unfused(x), recorded) < 4e-6);
  }
}

TEST_CASE("batch_norm_activation: wrong arguments are refused with batch_norm2d's messages") {
  Generator gen(36);
  const Tensor x = test::random_tensor({2, 5, 3, 3}, gen, DType::f32);
  CHECK_THROWS_WITH_AS(batch_norm_activation(x, ones({16}), Tensor(), Tensor(), Tensor(), Tensor(),
                                             true, 0.1, 1e-5, Activation::relu),
                       doctest::Contains("batch_norm2d: input has 5 channels, weight has 16"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      batch_norm_activation(test::random_tensor({2, 5, 3}, gen, DType::f32), Tensor(), Tensor(),
                            Tensor(), Tensor(), Tensor(), true, 0.1, 1e-5, Activation::hardswish),
      doctest::Contains("batch_norm2d: input must be 4-D [N, C, H, W], got shape [2, 5, 3]"),
      std::invalid_argument);
  CHECK_THROWS_WITH_AS(batch_norm_activation(x, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(),
                                             false, 0.1, 1e-5, Activation::relu),
                       doctest::Contains("running_mean and running_var must be defined in "
                                         "evaluation mode"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      batch_norm_activation(zeros({2, 5, 3, 3}, DType::i32), Tensor(), Tensor(), Tensor(), Tensor(),
                            Tensor(), true, 0.1, 1e-5, Activation::relu),
      doctest::Contains("batch_norm2d: dtype i32"), std::invalid_argument);
  Tensor counter = zeros({}, DType::i64);
  CHECK_THROWS_WITH_AS(
      batch_norm_activation(test::random_tensor({1, 5, 1, 1}, gen, DType::f32), Tensor(), Tensor(),
                            zeros({5}), ones({5}), counter, true, 0.1, 1e-5, Activation::relu),
      doctest::Contains("expected more than 1 value per channel when training"),
      std::invalid_argument);
  CHECK(counter.item() == 0);  // the failed call changed nothing
  CHECK_THROWS_WITH_AS(batch_norm_activation(x, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(),
                                             true, 0.1, 1e-5, Activation::hardsigmoid),
                       doctest::Contains("hardsigmoid is not fused with BatchNorm"),
                       std::invalid_argument);
}
