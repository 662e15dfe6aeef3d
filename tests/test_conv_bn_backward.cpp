// BatchNorm + activation after a 1x1 convolution absorbs the convolution's
// backward node (layers/batchnorm2d.cpp): its backward forms dL/d(conv
// output) slice by slice inside the convolution's backward (gemm_cpu.h's
// conv1x1_backward) and never stores it. Checked: the gradients of the
// input, the convolution weight and BatchNorm's weight and bias equal, bit
// for bit, those of the same computation with the two nodes kept apart (the
// convolution output passed through an exact x * 1), in f32 (sliced) and
// f64 (formed whole), with enough rows for the slices and too few, one and
// two threads, training and evaluation mode, each activation, an input that
// needs no gradient, and a convolution output that has a second consumer;
// the absorbed node's name and inputs; gradcheck in double; the sliced
// input gradient of any rows against batch_norm_backward's whole pass. (With a second
// consumer the sums are ordered differently: equal within a stated bound.)
#include <doctest/doctest.h>

#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "layers/activations.h"
#include "layers/batchnorm2d.h"
#include "layers/batchnorm2d_cpu.h"
#include "layers/conv2d.h"
#include "tensor/ops.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

struct Case {
  int64_t batch, in_channels, out_channels, height, width;
};

// 4 x 48 x 48 = 9,216 rows: four slices of conv1x1_backward (two per
// thread); 2 x 5 x 7 = 70 rows: too few, G is formed whole.
const Case kCases[] = {{4, 24, 72, 48, 48}, {2, 16, 40, 5, 7}, {3, 8, 5, 40, 40}};
const Activation kActivations[] = {Activation::none, Activation::relu, Activation::hardswish};

struct Values {
  Tensor x, conv_weight, bn_weight, bn_bias, running_mean, running_var, grad_output;
};

Values make_values(const Case& c, DType dtype, Generator& gen) {
  Values v;
  v.x = test::random_tensor({c.batch, c.in_channels, c.height, c.width}, gen, dtype,
                            MemoryFormat::channels_last);
  v.conv_weight = test::random_tensor({c.out_channels, c.in_channels, 1, 1}, gen, dtype,
                                      MemoryFormat::contiguous, 0.5);
  const test::BatchNormState s = test::random_batch_norm_state(c.out_channels, gen, 0.5, 1.5, 1.0);
  v.bn_weight = test::from_values(s.weight, {c.out_channels}, dtype);
  v.bn_bias = test::from_values(s.bias, {c.out_channels}, dtype);
  v.running_mean = test::from_values(s.running_mean, {c.out_channels}, dtype);
  v.running_var = test::from_values(s.running_var, {c.out_channels}, dtype);
  v.grad_output = test::random_tensor({c.batch, c.out_channels, c.height, c.width}, gen, dtype,
                                      MemoryFormat::channels_last);
  return v;
}

struct Options {
  bool training = true;
  bool input_needs_grad = true;
  bool second_consumer = false;  // the conv output also feeds sum(y) * 0.5 added to the loss
};

struct Gradients {
  Tensor x, conv_weight, bn_weight, bn_bias;
};

Gradients run(const Values& v, Activation activation, const Options& o, bool apart) {
  Tensor x = v.x.clone(), w = v.conv_weight.clone(), gamma = v.bn_weight.clone();
  Tensor beta = v.bn_bias.clone();
  x.set_requires_grad(o.input_needs_grad);
  for (Tensor* t : {&w, &gamma, &beta}) t->set_requires_grad(true);
  const Tensor y = conv2d(x, w, Tensor());
  const Tensor bn_input = apart ? scale(y, 1.0) : y;
  Tensor mean = v.running_mean.clone(), var = v.running_var.clone();
  const Tensor out = batch_norm_activation(bn_input, gamma, beta, mean, var, Tensor(), o.training,
                                           0.01, 1e-3, activation);
  Tensor loss = sum(mul(out, v.grad_output));
  if (o.second_consumer) loss = add(loss, scale(sum(y), 0.5));
  loss.backward();
  return {o.input_needs_grad ? x.grad() : Tensor(), w.grad(), gamma.grad(), beta.grad()};
}

// Exactly equal (tolerance 0), or within `tolerance` of max_relative_error.
void check_equal(const Gradients& fused, const Gradients& apart, double tolerance = 0.0) {
  if (apart.x.defined()) {
    REQUIRE(fused.x.defined());
    CHECK(test::max_relative_error(fused.x, apart.x) <= tolerance);
  }
  CHECK(test::max_relative_error(fused.conv_weight, apart.conv_weight) <= tolerance);
  CHECK(test::max_relative_error(fused.bn_weight, apart.bn_weight) <= tolerance);
  CHECK(test::max_relative_error(fused.bn_bias, apart.bn_bias) <= tolerance);
}

}  // namespace

TEST_CASE("conv + BatchNorm backward: absorbed, the gradients of the two nodes, bit for bit") {
  Generator gen(91);
  for (int threads : {1, 2}) {
    test::use_openmp_threads(threads);
    for (DType dtype : {DType::f32, DType::f64}) {
      for (const Case& c : kCases) {
        for (Activation activation : kActivations) {
          for (bool training : {true, false}) {
            CAPTURE(threads);
            CAPTURE(dtype_name(dtype));
            CAPTURE(c.batch * c.height * c.width);
            CAPTURE(activation_name(activation));
            CAPTURE(training);
            const Values v = make_values(c, dtype, gen);
            Options o;
            o.training = training;
            check_equal(run(v, activation, o, false), run(v, activation, o, true));
          }
        }
      }
    }
  }
  test::use_openmp_threads(1);
}

TEST_CASE("conv + BatchNorm backward: an input without gradient, a second consumer") {
  Generator gen(92);
  test::use_openmp_threads(2);
  for (DType dtype : {DType::f32, DType::f64}) {
    const Values v = make_values(kCases[0], dtype, gen);
    Options no_input_grad;
    no_input_grad.input_needs_grad = false;
    check_equal(run(v, Activation::hardswish, no_input_grad, false),
                run(v, Activation::hardswish, no_input_grad, true));
    // With a second consumer the two paths sum differently: absorbed, the
    // convolution's backward runs once per consumer and the engine adds the
    // results (A G1 + A G2); apart, the engine adds the gradients first
    // (A (G1 + G2)). The weight gradient is a sum over 9,216 rows whose
    // partial sums are far larger than some of the results, so the two
    // roundings differ by many ulps of those: observed 5.0e-5 (f32) and
    // 1.6e-13 (f64) in max_relative_error, within about 10^3 times each
    // type's 2^-24 and 2^-53; the bounds are 1e-4 and 1e-12 (deterministic:
    // fixed seeds and thread count).
    Options shared;
    shared.second_consumer = true;
    check_equal(run(v, Activation::relu, shared, false), run(v, Activation::relu, shared, true),
                dtype == DType::f32 ? 1e-4 : 1e-12);
  }
  test::use_openmp_threads(1);
}

TEST_CASE("conv + BatchNorm backward: the BatchNorm node takes the convolution's inputs") {
  Generator gen(93);
  const Values v = make_values(kCases[1], DType::f32, gen);
  Tensor x = v.x.clone(), w = v.conv_weight.clone();
  x.set_requires_grad(true);
  w.set_requires_grad(true);
  const Tensor y = conv2d(x, w, Tensor());
  const Tensor absorbed = batch_norm_activation(y, v.bn_weight, v.bn_bias, Tensor(), Tensor(),
                                                Tensor(), true, 0.1, 1e-5, Activation::relu);
  REQUIRE(absorbed.grad_fn());
  CHECK(absorbed.grad_fn()->name() == "BatchNorm2dReluBackward");
  CHECK(absorbed.grad_fn()->inputs.size() == 5);  // x, conv weight, conv bias, weight, bias
  CHECK(absorbed.grad_fn()->inputs[1].impl() == w.impl());
  // NCHW convolution output, or another op in between: the usual three inputs.
  const Tensor kept = batch_norm_activation(scale(y, 1.0), v.bn_weight, v.bn_bias, Tensor(),
                                            Tensor(), Tensor(), true, 0.1, 1e-5, Activation::relu);
  CHECK(kept.grad_fn()->inputs.size() == 3);
  const Tensor y_nchw = conv2d(x.contiguous(), w, Tensor());
  const Tensor nchw = batch_norm_activation(y_nchw, v.bn_weight, v.bn_bias, Tensor(), Tensor(),
                                            Tensor(), true, 0.1, 1e-5, Activation::relu);
  CHECK(nchw.grad_fn()->inputs.size() == 3);
}

TEST_CASE("conv + BatchNorm backward: gradcheck in double through the absorbed node") {
  Generator gen(94);
  GradcheckOptions options;
  options.max_points_per_tensor = 30;
  for (Activation activation : kActivations) {
    CAPTURE(activation_name(activation));
    Values v = make_values({2, 4, 6, 3, 5}, DType::f64, gen);
    for (Tensor* t : {&v.x, &v.conv_weight, &v.bn_weight, &v.bn_bias}) t->set_requires_grad(true);
    B3_CHECK_GRADCHECK(gradcheck(
        [&] {
          return batch_norm_activation(conv2d(v.x, v.conv_weight, Tensor()), v.bn_weight, v.bn_bias,
                                       Tensor(), Tensor(), Tensor(), true, 0.01, 1e-3, activation);
        },
        {v.x, v.conv_weight, v.bn_weight, v.bn_bias}, options));
  }
}

TEST_CASE("NhwcBatchNormInputGradient: any rows, the bits of batch_norm_backward's pass") {
  // 5 channels: rows start at every phase of the 16-lane vectors, so ranges
  // end inside a vector (computed from a whole one) and in the scalar tail.
  Generator gen(95);
  const ActivationLayout layout{3, 5, 7, 9, MemoryFormat::channels_last};
  const int64_t rows = 3 * 7 * 9, channels = 5;
  for (Activation activation : kActivations) {
    for (bool training : {true, false}) {
      CAPTURE(activation_name(activation));
      CAPTURE(training);
      const std::vector<double> xv = test::normal_values(rows * channels, gen, 0.0, 2.0);
      const std::vector<double> gv = test::normal_values(rows * channels, gen, 0.0, 1.0);
      const std::vector<float> x(xv.begin(), xv.end()), g(gv.begin(), gv.end());
      const std::vector<float> w = {0.5f, -1.25f, 2.0f, 1.0f, 0.75f};
      const std::vector<float> b = {0.1f, -0.3f, 1.5f, 0.0f, -2.0f};
      const std::vector<double> mean = {0.2, -0.1, 0.05, 0.3, -0.4};
      const std::vector<double> invstd = {1.1, 0.7, 2.0, 0.9, 1.3};
      std::vector<float> whole(x.size());
      cpu::batch_norm_backward<float>(x.data(), g.data(), w.data(), b.data(), mean.data(),
                                      invstd.data(), whole.data(), nullptr, nullptr, layout,
                                      training, activation);
      std::vector<float> grad_weight(5), grad_bias(5), expected_weight(5), expected_bias(5);
      cpu::batch_norm_backward<float>(x.data(), g.data(), w.data(), b.data(), mean.data(),
                                      invstd.data(), nullptr, expected_weight.data(),
                                      expected_bias.data(), layout, training, activation);
      const cpu::NhwcBatchNormInputGradient<float> sliced(
          x.data(), g.data(), w.data(), b.data(), mean.data(), invstd.data(), layout, training,
          activation, grad_weight.data(), grad_bias.data());
      CHECK(grad_weight == expected_weight);
      CHECK(grad_bias == expected_bias);
      for (int64_t first : {int64_t{0}, int64_t{1}, int64_t{3}, int64_t{50}, int64_t{187}}) {
        for (int64_t count : {int64_t{1}, int64_t{2}, int64_t{5}, int64_t{7}}) {
          if (first + count > rows) continue;
          std::vector<float> part(static_cast<size_t>(count * channels));
          sliced.rows(first, count, part.data());
          const std::vector<float> reference(whole.begin() + first * channels,
                                             whole.begin() + (first + count) * channels);
          CHECK(part == reference);
        }
      }
    }
  }
}
