// BatchNorm2d: forward, running statistics and gradients against a plain
// double reference of PyTorch's formulas; gradcheck in training and evaluation
// mode; both memory formats; awkward shapes; the Module's names, defaults and
// modes; argument errors.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "autograd/grad_mode.h"
#include "autograd/gradcheck.h"
#include "layers/batchnorm2d.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

// Batch 1 with H*W > 1, batch 3, 1x1 spatial with batch > 1, 7x7, odd sizes,
// C not a multiple of 8, and shapes past the kernels' parallel threshold. In
// NHWC the reductions take rows of up to 64 channels in register tiles of
// 64, 16 and 8 channels (then one by one) and wider rows in order four rows
// at a time, in blocks of 2^17 / C rows: 40 = 16 + 16 + 8 channels, 64 over
// two blocks (2523 rows), 72 (vectors only) over two blocks of which the
// second has 367 rows (not a multiple of four), 77 with 5 channels past the
// vectors.
const Shape kShapes[] = {{1, 3, 5, 7},    {3, 5, 4, 4},    {4, 13, 1, 1}, {2, 16, 7, 7},
                         {3, 5, 3, 5},    {8, 16, 17, 17}, {2, 40, 9, 9}, {3, 64, 29, 29},
                         {3, 72, 27, 27}, {2, 77, 9, 9}};
// Smaller shapes for gradcheck (each point costs three forward passes).
const Shape kGradShapes[] = {{1, 3, 3, 5}, {3, 5, 2, 3}, {4, 13, 1, 1}, {2, 3, 7, 7}, {3, 5, 3, 5}};

using test::from_values;
using test::normal_values;

// Plain loops in double over logical NCHW values, as torch.nn.functional.batch_norm.
struct ReferenceForward {
  std::vector<double> y;
  std::vector<double> running_mean;  // after the update (training) or unchanged
  std::vector<double> running_var;
  std::vector<double> mean;  // the statistics used to normalize
  std::vector<double> var;
};

ReferenceForward reference_forward(const std::vector<double>& x, const Shape& shape,
                                   const std::vector<double>& weight,
                                   const std::vector<double>& bias,
                                   const std::vector<double>& running_mean,
                                   const std::vector<double>& running_var, bool training,
                                   double momentum, double eps) {
  const int64_t n = shape[0], channels = shape[1], hw = shape[2] * shape[3];
  const double m = static_cast<double>(n * hw);
  ReferenceForward out{std::vector<double>(x.size()), running_mean, running_var,
                       std::vector<double>(static_cast<size_t>(channels)),
                       std::vector<double>(static_cast<size_t>(channels))};
  for (int64_t c = 0; c < channels; ++c) {
    const size_t cu = static_cast<size_t>(c);
    double mean = running_mean[cu], var = running_var[cu];
    if (training) {
      double total = 0;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < hw; ++j)
          total += x[static_cast<size_t>((i * channels + c) * hw + j)];
      mean = total / m;
      double squares = 0;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < hw; ++j) {
          const double d = x[static_cast<size_t>((i * channels + c) * hw + j)] - mean;
          squares += d * d;
        }
      var = squares / m;  // biased, to normalize
      out.running_mean[cu] = (1 - momentum) * running_mean[cu] + momentum * mean;
      out.running_var[cu] = (1 - momentum) * running_var[cu] + momentum * squares / (m - 1);
    }
    out.mean[cu] = mean;
    out.var[cu] = var;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < hw; ++j) {
        const size_t e = static_cast<size_t>((i * channels + c) * hw + j);
        out.y[e] = (x[e] - mean) / std::sqrt(var + eps) * weight[cu] + bias[cu];
      }
  }
  return out;
}

struct ReferenceBackward {
  std::vector<double> grad_input, grad_weight, grad_bias;
};

// The header's formulas, in double: training differentiates through the batch
// statistics, evaluation treats them as constants.
ReferenceBackward reference_backward(const std::vector<double>& x, const std::vector<double>& g,
                                     const Shape& shape, const std::vector<double>& weight,
                                     const std::vector<double>& mean,
                                     const std::vector<double>& var, bool training, double eps) {
  const int64_t n = shape[0], channels = shape[1], hw = shape[2] * shape[3];
  const double m = static_cast<double>(n * hw);
  ReferenceBackward out{std::vector<double>(x.size()),
                        std::vector<double>(static_cast<size_t>(channels)),
                        std::vector<double>(static_cast<size_t>(channels))};
  for (int64_t c = 0; c < channels; ++c) {
    const size_t cu = static_cast<size_t>(c);
    const double invstd = 1.0 / std::sqrt(var[cu] + eps);
    double sum_g = 0, sum_g_xhat = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < hw; ++j) {
        const size_t e = static_cast<size_t>((i * channels + c) * hw + j);
        sum_g += g[e];
        sum_g_xhat += g[e] * (x[e] - mean[cu]) * invstd;
      }
    out.grad_weight[cu] = sum_g_xhat;
    out.grad_bias[cu] = sum_g;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < hw; ++j) {
        const size_t e = static_cast<size_t>((i * channels + c) * hw + j);
        const double xhat = (x[e] - mean[cu]) * invstd;
        out.grad_input[e] = training
                                ? weight[cu] * invstd / m * (m * g[e] - sum_g - xhat * sum_g_xhat)
                                : weight[cu] * invstd * g[e];
      }
  }
  return out;
}

// Random per-channel parameters and statistics for a layer of `channels`:
// weight ~ N(1, 0.5), bias ~ N(0, 0.5).
using ChannelState = test::BatchNormState;
ChannelState random_state(int64_t channels, Generator& gen) {
  return test::random_batch_norm_state(channels, gen, 1.0, 0.5, 0.5);
}

}  // namespace

TEST_CASE("batch_norm2d: training forward and running statistics match the reference") {
  test::use_openmp_threads(2);  // the larger shapes run the parallel reductions
  Generator gen(11);
  for (const Shape& shape : kShapes) {
    for (MemoryFormat format : test::both_formats()) {
      for (DType dtype : {DType::f32, DType::f64}) {
        CAPTURE(shape_str(shape));
        CAPTURE(memory_format_name(format));
        CAPTURE(dtype_name(dtype));
        const int64_t channels = shape[1];
        const ChannelState s = random_state(channels, gen);
        const Tensor weight = from_values(s.weight, {channels}, dtype);
        const Tensor bias = from_values(s.bias, {channels}, dtype);
        Tensor running_mean = from_values(s.running_mean, {channels}, dtype);
        Tensor running_var = from_values(s.running_var, {channels}, dtype);
        Tensor counter = zeros({}, DType::i64);
        std::vector<double> expected_mean = s.running_mean, expected_var = s.running_var;
        for (int step = 1; step <= 2; ++step) {
          CAPTURE(step);
          // Mean 3 and spread 2: the centering and the variance really matter.
          const std::vector<double> xv = normal_values(shape_numel(shape), gen, 3.0, 2.0);
          const Tensor x = from_values(xv, shape, dtype, format);
          const Tensor y = batch_norm2d(x, weight, bias, running_mean, running_var, counter,
                                        /*training=*/true);
          // The reference sees the values x holds (rounded to f32 for f32).
          const ReferenceForward ref =
              reference_forward(x.to_doubles(), shape, weight.to_doubles(), bias.to_doubles(),
                                expected_mean, expected_var, true, 0.1, 1e-5);
          expected_mean = ref.running_mean;
          expected_var = ref.running_var;
          CHECK(y.shape() == shape);
          CHECK(y.suggest_memory_format() == x.suggest_memory_format());
          CHECK(y.strides() == x.strides());
          // f64: statistics and the multiply-add in double, error ~1e-16 times
          // the M <= 2312 terms of a sum, far below 1e-12. f32: y = x*scale + shift
          // rounds scale, shift, the product and the sum (4 roundings of terms
          // up to ~|weight| * 4 sigma + |bias| ~ 10), each 6e-8 relative: < 3e-6
          // absolute; the statistics themselves are exact to 1e-13 (double sums).
          const double tolerance = dtype == DType::f64 ? 1e-12 : 1e-5;
          CHECK(test::max_relative_error(y, ref.y) < tolerance);
          // Buffers: computed in double, rounded once to the buffer dtype (f32: 6e-8).
          const double buffer_tolerance = dtype == DType::f64 ? 1e-13 : 1e-6;
          CHECK(test::max_relative_error(running_mean, expected_mean) < buffer_tolerance);
          CHECK(test::max_relative_error(running_var, expected_var) < buffer_tolerance);
          CHECK(counter.item() == step);
        }
      }
    }
  }
}

TEST_CASE("batch_norm2d: evaluation forward uses the running statistics, both formats") {
  Generator gen(12);
  for (const Shape& shape : kShapes) {
    for (MemoryFormat format : test::both_formats()) {
      CAPTURE(shape_str(shape));
      CAPTURE(memory_format_name(format));
      const int64_t channels = shape[1];
      const ChannelState s = random_state(channels, gen);
      Tensor running_mean = from_values(s.running_mean, {channels}, DType::f32);
      Tensor running_var = from_values(s.running_var, {channels}, DType::f32);
      Tensor counter = zeros({}, DType::i64);
      const Tensor x = test::random_tensor(shape, gen, DType::f32, format);
      const Tensor y = batch_norm2d(x, from_values(s.weight, {channels}, DType::f32),
                                    from_values(s.bias, {channels}, DType::f32), running_mean,
                                    running_var, counter, /*training=*/false, 0.01, 1e-3);
      const ReferenceForward ref =
          reference_forward(x.to_doubles(), shape, s.weight, s.bias, running_mean.to_doubles(),
                            running_var.to_doubles(), false, 0.01, 1e-3);
      CHECK(y.strides() == x.strides());
      // f32 multiply-add of terms up to ~|weight| * |x - mean| / 0.7 + |bias| ~ 10:
      // a few roundings of 6e-8 relative, < 3e-6 absolute.
      CHECK(test::max_relative_error(y, ref.y) < 1e-5);
      // Nothing moves in evaluation mode.
      CHECK(test::max_relative_error(running_mean, ref.running_mean) == 0.0);
      CHECK(test::max_relative_error(running_var, ref.running_var) == 0.0);
      CHECK(counter.item() == 0);
    }
  }
}

TEST_CASE("batch_norm2d: batch 127 and MobileNetV3's eps and momentum") {
  Generator gen(13);
  const Shape shape{127, 5, 2, 3};
  for (MemoryFormat format : test::both_formats()) {
    CAPTURE(memory_format_name(format));
    const ChannelState s = random_state(5, gen);
    Tensor running_mean = from_values(s.running_mean, {5}, DType::f32);
    Tensor running_var = from_values(s.running_var, {5}, DType::f32);
    const Tensor x = test::random_tensor(shape, gen, DType::f32, format, 3.0);
    const Tensor y = batch_norm2d(x, from_values(s.weight, {5}, DType::f32),
                                  from_values(s.bias, {5}, DType::f32), running_mean, running_var,
                                  Tensor(), true, 0.01, 1e-3);
    const ReferenceForward ref = reference_forward(x.to_doubles(), shape, s.weight, s.bias,
                                                   s.running_mean, s.running_var, true, 0.01, 1e-3);
    // Same bound as the training case above (f32 multiply-add of terms ~10).
    CHECK(test::max_relative_error(y, ref.y) < 1e-5);
    // One rounding to f32 of values computed in double.
    CHECK(test::max_relative_error(running_mean, ref.running_mean) < 1e-6);
    CHECK(test::max_relative_error(running_var, ref.running_var) < 1e-6);
  }
}

TEST_CASE("batch_norm2d: backward matches the reference formulas in f32 and f64") {
  test::use_openmp_threads(2);  // the larger shapes run the parallel reductions
  // gradcheck (below) proves the f64 gradients numerically; this checks both
  // dtypes' kernels against the closed-form reference, training and evaluation.
  Generator gen(14);
  for (const Shape& shape : kShapes) {
    for (MemoryFormat format : test::both_formats()) {
      for (DType dtype : {DType::f32, DType::f64}) {
        for (bool training : {true, false}) {
          CAPTURE(shape_str(shape));
          CAPTURE(memory_format_name(format));
          CAPTURE(dtype_name(dtype));
          CAPTURE(training);
          const int64_t channels = shape[1];
          const ChannelState s = random_state(channels, gen);
          Tensor x =
              from_values(normal_values(shape_numel(shape), gen, 1.0, 2.0), shape, dtype, format);
          Tensor weight = from_values(s.weight, {channels}, dtype);
          Tensor bias = from_values(s.bias, {channels}, dtype);
          x.set_requires_grad(true);
          weight.set_requires_grad(true);
          bias.set_requires_grad(true);
          const Tensor running_mean = from_values(s.running_mean, {channels}, dtype);
          const Tensor running_var = from_values(s.running_var, {channels}, dtype);
          const std::vector<double> gv = normal_values(shape_numel(shape), gen, 0.0, 1.0);
          // The batch statistics, taken before the call moves the running ones.
          const ReferenceForward stats =
              reference_forward(x.to_doubles(), shape, s.weight, s.bias, s.running_mean,
                                s.running_var, training, 0.1, 1e-5);
          const Tensor y =
              batch_norm2d(x, weight, bias, running_mean, running_var, Tensor(), training);
          const Tensor g = from_values(gv, shape, dtype, format);
          y.backward(g);
          // The reference sees the values g holds (rounded to f32 for f32).
          const ReferenceBackward ref =
              reference_backward(x.to_doubles(), g.to_doubles(), shape, s.weight, stats.mean,
                                 stats.var, training, 1e-5);
          CHECK(x.grad().is_contiguous(format));
          // f64: the same sums in another order, ~1e-16 * M relative.
          // f32 input gradient: gain * (g - mean_g - (x - mean) * projection) with
          // each factor rounded to f32 (6e-8) and terms up to ~|weight| / 0.7 * 10:
          // a few 1e-6 absolute. Weight and bias gradients are double sums of the
          // same f32 values, rounded once at the end: 6e-8 relative.
          const double input_tolerance = dtype == DType::f64 ? 1e-11 : 2e-5;
          const double param_tolerance = dtype == DType::f64 ? 1e-11 : 1e-6;
          CHECK(test::max_relative_error(x.grad(), ref.grad_input) < input_tolerance);
          CHECK(test::max_relative_error(weight.grad(), ref.grad_weight) < param_tolerance);
          CHECK(test::max_relative_error(bias.grad(), ref.grad_bias) < param_tolerance);
        }
      }
    }
  }
}

TEST_CASE("batch_norm2d: gradcheck in training mode, both formats") {
  Generator gen(15);
  GradcheckOptions options;
  options.max_points_per_tensor = 60;
  for (const Shape& shape : kGradShapes) {
    for (MemoryFormat format : test::both_formats()) {
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
      // Running statistics given too: their update must not disturb the gradient.
      Tensor running_mean = zeros({channels}, DType::f64);
      Tensor running_var = ones({channels}, DType::f64);
      B3_CHECK_GRADCHECK(gradcheck(
          [&] { return batch_norm2d(x, weight, bias, running_mean, running_var, Tensor(), true); },
          {x, weight, bias}, options));
      // affine = false: no weight or bias.
      B3_CHECK_GRADCHECK(gradcheck(
          [&] { return batch_norm2d(x, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), true); },
          {x}, options));
    }
  }
}

TEST_CASE("batch_norm2d: gradcheck in evaluation mode, both formats") {
  Generator gen(16);
  GradcheckOptions options;
  options.max_points_per_tensor = 60;
  for (const Shape& shape : kGradShapes) {
    for (MemoryFormat format : test::both_formats()) {
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
      const Tensor running_mean = from_values(s.running_mean, {channels}, DType::f64);
      const Tensor running_var = from_values(s.running_var, {channels}, DType::f64);
      B3_CHECK_GRADCHECK(gradcheck(
          [&] { return batch_norm2d(x, weight, bias, running_mean, running_var, Tensor(), false); },
          {x, weight, bias}, options));
    }
  }
}

TEST_CASE("BatchNorm2d: gradcheck_module in training and evaluation mode") {
  Generator gen(17);
  GradcheckOptions options;
  options.max_points_per_tensor = 60;
  for (MemoryFormat format : test::both_formats()) {
    CAPTURE(memory_format_name(format));
    BatchNorm2d bn(5, 1e-3, 0.01);
    bn.to(DType::f64);
    bn.weight.copy_(from_values(normal_values(5, gen, 1.0, 0.5), {5}, DType::f64));
    bn.bias.copy_(from_values(normal_values(5, gen, 0.0, 0.5), {5}, DType::f64));
    const Tensor x = test::random_tensor({3, 5, 3, 3}, gen, DType::f64, format);
    bn.train();
    B3_CHECK_GRADCHECK(gradcheck_module(bn, x, options));
    bn.eval();  // now with the running statistics the training calls left
    B3_CHECK_GRADCHECK(gradcheck_module(bn, x, options));
  }
}

TEST_CASE("BatchNorm2d: parameters, buffers, defaults and description") {
  BatchNorm2d bn(16);
  const auto params = bn.named_parameters();
  REQUIRE(params.size() == 2);
  CHECK(params[0].first == "weight");
  CHECK(params[1].first == "bias");
  CHECK(test::max_relative_error(bn.weight, std::vector<double>(16, 1.0)) == 0.0);
  CHECK(test::max_relative_error(bn.bias, std::vector<double>(16, 0.0)) == 0.0);
  CHECK(bn.weight.requires_grad());
  const auto buffers = bn.named_buffers();
  REQUIRE(buffers.size() == 3);
  CHECK(buffers[0].first == "running_mean");
  CHECK(buffers[1].first == "running_var");
  CHECK(buffers[2].first == "num_batches_tracked");
  CHECK(test::max_relative_error(bn.running_mean, std::vector<double>(16, 0.0)) == 0.0);
  CHECK(test::max_relative_error(bn.running_var, std::vector<double>(16, 1.0)) == 0.0);
  CHECK(bn.num_batches_tracked.dtype() == DType::i64);
  CHECK(bn.num_batches_tracked.numel() == 1);
  CHECK(bn.num_batches_tracked.item() == 0);
  CHECK(!bn.running_mean.requires_grad());
  CHECK(bn.options().eps == 1e-5);
  CHECK(bn.options().momentum == 0.1);
  CHECK(bn.parameter_count() == 32);
  CHECK(bn.describe() ==
        "BatchNorm2d(16, eps=1e-05, momentum=0.1, affine=true, track_running_stats=true)");

  BatchNorm2d plain(
      BatchNorm2dOptions{.num_features = 4, .affine = false, .track_running_stats = false});
  CHECK(plain.named_parameters().empty());
  CHECK(plain.named_buffers().empty());
  bn.to(DType::f64);  // floating tensors convert, the counter stays i64
  CHECK(bn.running_var.dtype() == DType::f64);
  CHECK(bn.num_batches_tracked.dtype() == DType::i64);
}

TEST_CASE("BatchNorm2d: two training steps, then evaluation with the running statistics") {
  Generator gen(18);
  for (MemoryFormat format : test::both_formats()) {
    CAPTURE(memory_format_name(format));
    const Shape shape{3, 13, 5, 5};
    BatchNorm2d bn(13, 1e-3, 0.01);  // MobileNetV3's settings
    std::vector<double> rm(13, 0.0), rv(13, 1.0);
    const std::vector<double> w(13, 1.0), b(13, 0.0);
    for (int step = 1; step <= 2; ++step) {
      CAPTURE(step);
      const Tensor x =
          from_values(normal_values(shape_numel(shape), gen, -1.0, 3.0), shape, DType::f32, format);
      const Tensor y = bn(x);
      const ReferenceForward ref =
          reference_forward(x.to_doubles(), shape, w, b, rm, rv, true, 0.01, 1e-3);
      rm = ref.running_mean;
      rv = ref.running_var;
      // f32 multiply-add of terms up to ~5 (see the functional test): < 3e-6.
      CHECK(test::max_relative_error(y, ref.y) < 1e-5);
      // Rounded once to f32 from double.
      CHECK(test::max_relative_error(bn.running_mean, rm) < 1e-6);
      CHECK(test::max_relative_error(bn.running_var, rv) < 1e-6);
      CHECK(bn.num_batches_tracked.item() == step);
    }
    bn.eval();
    const Tensor x = test::random_tensor(shape, gen, DType::f32, format);
    const Tensor y = bn(x);
    const ReferenceForward ref =
        reference_forward(x.to_doubles(), shape, w, b, rm, rv, false, 0.01, 1e-3);
    // Evaluation normalizes with running_var ~ 1 (not the batch's): f32 error < 3e-6.
    CHECK(test::max_relative_error(y, ref.y) < 1e-5);
    CHECK(bn.num_batches_tracked.item() == 2);
    CHECK(test::max_relative_error(bn.running_mean, rm) < 1e-6);
    // Under NoGradGuard training still updates the buffers, as in PyTorch.
    bn.train();
    {
      NoGradGuard no_grad;
      bn(x);
    }
    CHECK(bn.num_batches_tracked.item() == 3);
  }
}

TEST_CASE("BatchNorm2d: without running statistics, evaluation uses the batch's") {
  Generator gen(19);
  BatchNorm2d bn(BatchNorm2dOptions{.num_features = 5, .track_running_stats = false});
  bn.to(DType::f64);
  bn.eval();
  const Shape shape{2, 5, 3, 3};
  const Tensor x = test::random_tensor(shape, gen, DType::f64);
  const ReferenceForward ref = reference_forward(
      x.to_doubles(), shape, std::vector<double>(5, 1.0), std::vector<double>(5, 0.0),
      std::vector<double>(5, 0.0), std::vector<double>(5, 1.0), true, 0.1, 1e-5);
  // Double throughout: only summation order differs.
  CHECK(test::max_relative_error(bn(x), ref.y) < 1e-12);
}

TEST_CASE("batch_norm2d: a non-dense input is normalized correctly") {
  Generator gen(20);
  const Tensor base = test::random_tensor({2, 3, 5, 6}, gen, DType::f64);
  const Tensor x = base.narrow(3, 1, 4);  // [2, 3, 5, 4], rows of 6 with 4 used
  REQUIRE(!x.is_dense());
  const Tensor y = batch_norm2d(x, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), true);
  const ReferenceForward ref = reference_forward(
      x.to_doubles(), x.shape(), std::vector<double>(3, 1.0), std::vector<double>(3, 0.0),
      std::vector<double>(3, 0.0), std::vector<double>(3, 1.0), true, 0.1, 1e-5);
  CHECK(test::max_relative_error(y, ref.y) < 1e-12);  // double throughout
}

TEST_CASE("batch_norm2d: wrong arguments are refused with clear messages") {
  Generator gen(21);
  const Tensor x = test::random_tensor({2, 5, 3, 3}, gen, DType::f32);
  const Tensor w16 = ones({16});
  const Tensor w5 = ones({5});
  CHECK_THROWS_WITH_AS(batch_norm2d(x, w16, Tensor(), Tensor(), Tensor(), Tensor(), true),
                       doctest::Contains("batch_norm2d: input has 5 channels, weight has 16"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(batch_norm2d(x, w5, ones({7}), Tensor(), Tensor(), Tensor(), true),
                       doctest::Contains("batch_norm2d: input has 5 channels, bias has 7"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(batch_norm2d(x, w5, Tensor(), zeros({4}), ones({5}), Tensor(), true),
                       doctest::Contains("input has 5 channels, running_mean has 4"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(batch_norm2d(x, ones({5, 1}), Tensor(), Tensor(), Tensor(), Tensor(), true),
                       doctest::Contains("weight must be 1-D [C] with C = 5, got shape [5, 1]"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      batch_norm2d(test::random_tensor({2, 5, 3}, gen, DType::f32), w5, Tensor(), Tensor(),
                   Tensor(), Tensor(), true),
      doctest::Contains("batch_norm2d: input must be 4-D [N, C, H, W], got shape [2, 5, 3]"),
      std::invalid_argument);
  const Tensor single = test::random_tensor({1, 5, 1, 1}, gen, DType::f32);
  CHECK_THROWS_WITH_AS(
      batch_norm2d(single, w5, Tensor(), zeros({5}), ones({5}), Tensor(), true),
      doctest::Contains("expected more than 1 value per channel when training, got input size "
                        "[1, 5, 1, 1]"),
      std::invalid_argument);
  // The same input is fine in evaluation mode.
  CHECK(batch_norm2d(single, w5, Tensor(), zeros({5}), ones({5}), Tensor(), false).numel() == 5);
  BatchNorm2d bn(5);
  CHECK_THROWS_WITH_AS(bn(single), doctest::Contains("more than 1 value per channel"),
                       std::invalid_argument);
  CHECK(bn.num_batches_tracked.item() == 0);  // the failed call changed nothing
  CHECK_THROWS_WITH_AS(batch_norm2d(x, w5, Tensor(), Tensor(), Tensor(), Tensor(), false),
                       doctest::Contains("running_mean and running_var must be defined in "
                                         "evaluation mode"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      batch_norm2d(x, ones({5}, DType::f64), Tensor(), Tensor(), Tensor(), Tensor(), true),
      doctest::Contains("batch_norm2d: weight has dtype f64, input has f32"),
      std::invalid_argument);
  CHECK_THROWS_WITH_AS(batch_norm2d(zeros({2, 5, 3, 3}, DType::i32), Tensor(), Tensor(), Tensor(),
                                    Tensor(), Tensor(), true),
                       doctest::Contains("batch_norm2d: dtype i32"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(BatchNorm2d(0), doctest::Contains("num_features must be positive"),
                       std::invalid_argument);
}
