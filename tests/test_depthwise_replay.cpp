// A depthwise convolution whose input is a batch_norm_activation output does
// not keep that input for its weight gradient: it keeps the BatchNorm node's
// replay (Node::output_replay) and rebuilds the images in its backward
// (layers/conv2d.cpp). Checked here: the replay writes the forward's bits;
// the gradients with the replay equal, bit for bit, those of the same
// computation with the input kept (the BatchNorm output passed through an
// exact x * 1 first, which the replay does not recognize), in f32 and f64,
// for each fused activation, 3x3 and 5x5 kernels, strides 1 and 2, channel
// counts with whole vectors, half vectors and leftovers, with one and two
// threads (two threads split an image between them); the BatchNorm output's
// memory is freed when the forward drops it; gradcheck in double through
// both ops; the replay is refused for NCHW outputs and for other tensors.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "layers/activations.h"
#include "layers/batchnorm2d.h"
#include "layers/conv2d.h"
#include "tensor/allocator.h"
#include "tensor/ops.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

struct ReplayCase {
  int64_t batch, channels, height, width, kernel, stride;
};

// Channel counts 3 (leftovers only), 24 (a vector and a half in f32), 40,
// 72; batch 3 with two threads splits the rows of image 1 between them.
const ReplayCase kCases[] = {{2, 3, 5, 5, 3, 1},    {3, 24, 9, 9, 3, 2},   {2, 40, 8, 8, 5, 1},
                             {3, 72, 11, 11, 5, 2}, {3, 16, 28, 28, 3, 1}, {1, 5, 7, 9, 3, 1}};
const Activation kActivations[] = {Activation::none, Activation::relu, Activation::hardswish};

struct Inputs {
  Tensor x, bn_weight, bn_bias, dw_weight, grad_output;
};

Inputs make_inputs(const ReplayCase& c, DType dtype, MemoryFormat format, Generator& gen) {
  Inputs in;
  const int64_t out_h = (c.height + 2 * (c.kernel / 2) - c.kernel) / c.stride + 1;
  const int64_t out_w = (c.width + 2 * (c.kernel / 2) - c.kernel) / c.stride + 1;
  in.x = test::random_tensor({c.batch, c.channels, c.height, c.width}, gen, dtype, format, 2.0);
  // Weight ~ N(0.5, 1.5), bias ~ N(0, 1): both sides of ReLU's kink and all
  // of Hardswish's ramp.
  in.bn_weight =
      test::from_values(test::normal_values(c.channels, gen, 0.5, 1.5), {c.channels}, dtype);
  in.bn_bias =
      test::from_values(test::normal_values(c.channels, gen, 0.0, 1.0), {c.channels}, dtype);
  in.dw_weight = test::random_tensor({c.channels, 1, c.kernel, c.kernel}, gen, dtype);
  in.grad_output = test::random_tensor({c.batch, c.channels, out_h, out_w}, gen, dtype, format);
  return in;
}

struct Gradients {
  Tensor output, x, bn_weight, bn_bias, dw_weight;
};

// conv2d(act(BN(x))) and its backward, on fresh leaves with in's values;
// with keep_input the convolution sees act(BN(x)) * 1, which has no replay.
Gradients run(const Inputs& in, const ReplayCase& c, Activation activation, bool keep_input) {
  Tensor x = in.x.clone(), w = in.bn_weight.clone(), b = in.bn_bias.clone();
  Tensor k = in.dw_weight.clone();
  for (Tensor* t : {&x, &w, &b, &k}) t->set_requires_grad(true);
  Tensor z =
      batch_norm_activation(x, w, b, Tensor(), Tensor(), Tensor(), true, 0.01, 1e-3, activation);
  if (keep_input) z = scale(z, 1.0);
  Gradients g;
  g.output = conv2d(z, k, Tensor(), c.stride, c.kernel / 2, c.channels);
  g.output.backward(in.grad_output);
  g.x = x.grad();
  g.bn_weight = w.grad();
  g.bn_bias = b.grad();
  g.dw_weight = k.grad();
  return g;
}

}  // namespace

TEST_CASE("depthwise replay: gradients equal those with the input kept, bit for bit") {
  Generator gen(71);
  for (int threads : {1, 2}) {
    test::use_openmp_threads(threads);
    for (DType dtype : {DType::f32, DType::f64}) {
      for (const ReplayCase& c : kCases) {
        for (Activation activation : kActivations) {
          CAPTURE(threads);
          CAPTURE(dtype_name(dtype));
          CAPTURE(c.batch);
          CAPTURE(c.channels);
          CAPTURE(c.height);
          CAPTURE(c.kernel);
          CAPTURE(c.stride);
          CAPTURE(activation_name(activation));
          const Inputs in = make_inputs(c, dtype, MemoryFormat::channels_last, gen);
          const Gradients replayed = run(in, c, activation, false);
          const Gradients kept = run(in, c, activation, true);
          CHECK(test::max_relative_error(replayed.output, kept.output) == 0.0);
          CHECK(test::max_relative_error(replayed.dw_weight, kept.dw_weight) == 0.0);
          CHECK(test::max_relative_error(replayed.x, kept.x) == 0.0);
          CHECK(test::max_relative_error(replayed.bn_weight, kept.bn_weight) == 0.0);
          CHECK(test::max_relative_error(replayed.bn_bias, kept.bn_bias) == 0.0);
        }
      }
    }
  }
  test::use_openmp_threads(1);
}

TEST_CASE("depthwise replay: the replay writes the forward's output, image by image") {
  Generator gen(72);
  for (DType dtype : {DType::f32, DType::f64}) {
    for (Activation activation : kActivations) {
      CAPTURE(dtype_name(dtype));
      CAPTURE(activation_name(activation));
      // 5 channels x 7 x 9: an image of 315 values, not a whole number of
      // vectors, so the replay's last values take the scalar path.
      Tensor x = test::random_tensor({3, 5, 7, 9}, gen, dtype, MemoryFormat::channels_last, 2.0);
      Tensor w = test::from_values(test::normal_values(5, gen, 0.5, 1.5), {5}, dtype);
      Tensor b = test::from_values(test::normal_values(5, gen, 0.0, 1.0), {5}, dtype);
      x.set_requires_grad(true);
      const Tensor z = batch_norm_activation(x, w, b, Tensor(), Tensor(), Tensor(), true, 0.01,
                                             1e-3, activation);
      const Node::OutputReplay replay = z.grad_fn()->output_replay(z);
      REQUIRE(replay);
      Tensor rebuilt = empty_like(z);
      replay(0, 3, rebuilt.data_ptr());
      CHECK(test::max_relative_error(rebuilt, z) == 0.0);
      // Images 1 and 2 alone, into the start of a buffer.
      Tensor part =
          empty({2, 5, 7, 9}, TensorOptions(dtype).with_format(MemoryFormat::channels_last));
      replay(1, 2, part.data_ptr());
      CHECK(test::max_relative_error(part, z.narrow(0, 1, 2)) == 0.0);
    }
  }
}

TEST_CASE("depthwise replay: the BatchNorm output is freed when the forward drops it") {
  Generator gen(73);
  const ReplayCase c{4, 32, 32, 32, 3, 1};
  const Inputs in = make_inputs(c, DType::f32, MemoryFormat::channels_last, gen);
  // groups = channels: the replay, so dropping z frees its storage; groups =
  // 1 (a full convolution, no replay): the node keeps z.
  for (bool depthwise : {true, false}) {
    CAPTURE(depthwise);
    Tensor x = in.x.clone(), k;
    x.set_requires_grad(true);
    k = depthwise ? in.dw_weight.clone() : test::random_tensor({32, 32, 3, 3}, gen, DType::f32);
    k.set_requires_grad(true);
    Tensor z = batch_norm_activation(x, in.bn_weight, in.bn_bias, Tensor(), Tensor(), Tensor(),
                                     true, 0.01, 1e-3, Activation::hardswish);
    const Tensor out = conv2d(z, k, Tensor(), 1, 1, depthwise ? 32 : 1);
    const size_t z_bytes = z.nbytes();
    const size_t before = host_memory_stats().active_bytes;
    z = Tensor();
    const size_t after = host_memory_stats().active_bytes;
    if (depthwise) {
      CHECK(before - after >= z_bytes);
    } else {
      CHECK(before == after);
    }
    out.backward(in.grad_output);  // and the backward still runs
    CHECK(k.grad().defined());
  }
}

TEST_CASE("depthwise replay: gradcheck in double through BatchNorm + activation and the conv") {
  Generator gen(74);
  GradcheckOptions options;
  options.max_points_per_tensor = 30;
  for (Activation activation : kActivations) {
    for (int64_t stride : {int64_t{1}, int64_t{2}}) {
      CAPTURE(activation_name(activation));
      CAPTURE(stride);
      const ReplayCase c{2, 5, 6, 7, 3, stride};
      Inputs in = make_inputs(c, DType::f64, MemoryFormat::channels_last, gen);
      for (Tensor* t : {&in.x, &in.bn_weight, &in.bn_bias, &in.dw_weight})
        t->set_requires_grad(true);
      B3_CHECK_GRADCHECK(gradcheck(
          [&] {
            const Tensor z =
                batch_norm_activation(in.x, in.bn_weight, in.bn_bias, Tensor(), Tensor(), Tensor(),
                                      true, 0.01, 1e-3, activation);
            return conv2d(z, in.dw_weight, Tensor(), stride, 1, c.channels);
          },
          {in.x, in.bn_weight, in.bn_bias, in.dw_weight}, options));
    }
  }
}

TEST_CASE("depthwise replay: refused for an NCHW output and for another tensor") {
  Generator gen(75);
  for (MemoryFormat format : test::both_formats()) {
    Tensor x = test::random_tensor({2, 4, 5, 5}, gen, DType::f32, format);
    x.set_requires_grad(true);
    const Tensor ones4 = ones({4});
    const Tensor z = batch_norm_activation(x, ones4, zeros({4}), Tensor(), Tensor(), Tensor(), true,
                                           0.1, 1e-5, Activation::relu);
    const bool nhwc = format == MemoryFormat::channels_last;
    CHECK(static_cast<bool>(z.grad_fn()->output_replay(z)) == nhwc);
    // Same shape, layout and grad_fn, other storage: not the node's output.
    Tensor other = empty_like(z);
    CHECK_FALSE(z.grad_fn()->output_replay(other));
    CHECK_FALSE(z.grad_fn()->output_replay(Tensor()));
  }
}
