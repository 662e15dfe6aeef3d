// Batch normalization on CUDA (layers/batchnorm2d_cuda.h): training forward
// (statistics, running-statistics update, normalization), inference forward,
// and both backwards, f32 and f16 activations with f32 statistics, NCHW and
// NHWC, against PyTorch's formulas in double on the same input values.
// Outputs are poisoned with NaN before each launch.
//
// Tolerances (f32 statistics either way). The mean and variance come from
// Welford's recurrence on runs of at most ~40 values per thread, merged with
// Chan's formula over at most ~50 more steps; with inputs of mean 1 and
// standard deviation 2 the mean is off by at most ~90 * 2^-24 * 3 < 2e-5 in
// the worst case and ~1e-6 in practice, which moves the normalized output by
// |weight| * invstd times that: 1e-5 * max(|y|, 1) for y, save_mean,
// save_invstd and the running statistics (relative). The backward sums (of g
// and of g * (x - mean), same chunking) are bounded by 1e-4 times the sum of
// their absolute terms (grad_weight, grad_bias) and grad_x by 1e-4 times the
// largest |grad_x| (it is a difference of such sums), the project's gradient
// bound. f16 outputs add one f16 rounding (test::half_output_bound).
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "layers/batchnorm2d_cuda.h"
#include "tests/support/cuda.h"

using namespace b3;
using test::DeviceBuffer;
using test::index_of;

namespace {

const ActivationLayout kShapes[] = {
    {2, 3, 5, 7}, {4, 16, 14, 14}, {3, 40, 1, 1}, {8, 33, 9, 9}, {127, 8, 7, 7}, {1, 5, 3, 1},
};

struct Inputs {
  std::vector<float> x, g, weight, bias, running_mean, running_var;
};

Inputs make_inputs(const ActivationLayout& l, uint32_t seed, bool half) {
  Inputs in;
  const size_t numel = static_cast<size_t>(l.numel());
  const size_t c = static_cast<size_t>(l.channels);
  in.x = test::random_normal(numel, seed, 2.0, 1.0);
  in.g = test::random_normal(numel, seed + 1);
  if (half) {
    in.x = test::round_to_half(in.x);
    in.g = test::round_to_half(in.g);
  }
  in.weight = test::random_normal(c, seed + 2, 0.2, 1.0);
  in.bias = test::random_normal(c, seed + 3, 0.2);
  in.running_mean = test::random_normal(c, seed + 4, 0.1);
  in.running_var = test::random_normal(c, seed + 5, 0.1, 1.0);
  for (float& v : in.running_var) v = std::abs(v) + 0.5f;
  return in;
}

struct Reference {
  std::vector<double> y, grad_x;                                // in the layout
  std::vector<double> mean, invstd, running_mean, running_var;  // [C]
  std::vector<double> grad_weight, grad_bias;                   // [C]
  std::vector<double> abs_g_xhat, abs_g;                        // [C], sums of |terms|
};

// training: batch statistics (and running updates); else the running ones.
Reference reference(const ActivationLayout& l, const Inputs& in, bool affine, bool training,
                    double momentum, double eps) {
  const int64_t C = l.channels;
  const double m = static_cast<double>(l.batch * l.spatial());
  Reference r;
  r.y.assign(in.x.size(), 0.0);
  r.grad_x = r.y;
  for (std::vector<double>* v : {&r.mean, &r.invstd, &r.running_mean, &r.running_var,
                                 &r.grad_weight, &r.grad_bias, &r.abs_g_xhat, &r.abs_g}) {
    v->assign(static_cast<size_t>(C), 0.0);
  }
  const auto for_each = [&](int64_t c, auto&& body) {
    for (int64_t n = 0; n < l.batch; ++n)
      for (int64_t h = 0; h < l.height; ++h)
        for (int64_t w = 0; w < l.width; ++w) body(index_of(l, n, c, h, w));
  };
  for (int64_t c = 0; c < C; ++c) {
    const size_t cc = static_cast<size_t>(c);
    double mean = 0.0, var = 0.0;
    if (training) {
      for_each(c, [&](size_t i) { mean += in.x[i]; });
      mean /= m;
      for_each(c, [&](size_t i) { var += (in.x[i] - mean) * (in.x[i] - mean); });
      const double unbiased = var / (m - 1.0);
      var /= m;
      r.running_mean[cc] = (1.0 - momentum) * in.running_mean[cc] + momentum * mean;
      r.running_var[cc] = (1.0 - momentum) * in.running_var[cc] + momentum * unbiased;
    } else {
      mean = in.running_mean[cc];
      var = in.running_var[cc];
      r.running_mean[cc] = in.running_mean[cc];
      r.running_var[cc] = in.running_var[cc];
    }
    const double invstd = 1.0 / std::sqrt(var + eps);
    const double weight = affine ? in.weight[cc] : 1.0;
    const double bias = affine ? in.bias[cc] : 0.0;
    r.mean[cc] = mean;
    r.invstd[cc] = invstd;
    double sum_g = 0.0, sum_g_xhat = 0.0;
    for_each(c, [&](size_t i) {
      const double xhat = (in.x[i] - mean) * invstd;
      r.y[i] = xhat * weight + bias;
      sum_g += in.g[i];
      sum_g_xhat += in.g[i] * xhat;
      r.abs_g[cc] += std::abs(in.g[i]);
      r.abs_g_xhat[cc] += std::abs(in.g[i] * xhat);
    });
    r.grad_bias[cc] = sum_g;
    r.grad_weight[cc] = sum_g_xhat;
    for_each(c, [&](size_t i) {
      const double xhat = (in.x[i] - mean) * invstd;
      r.grad_x[i] = training ? weight * invstd / m * (m * in.g[i] - sum_g - xhat * sum_g_xhat)
                             : weight * invstd * in.g[i];
    });
  }
  return r;
}

std::vector<double> scaled(const std::vector<double>& magnitudes, double factor) {
  std::vector<double> bound(magnitudes.size());
  for (size_t i = 0; i < bound.size(); ++i) bound[i] = factor * magnitudes[i];
  return bound;
}

std::vector<double> norm_bound(const std::vector<double>& expected, double factor) {
  return std::vector<double>(expected.size(), factor * std::max(test::max_abs(expected), 1e-30));
}

// One training forward + backward (or inference forward + backward) on the
// device, compared with the reference. T is float or Half.
template <typename T>
void run_case(ActivationLayout l, bool affine, bool track, bool training, double momentum,
              double eps, uint32_t seed) {
  constexpr bool half = std::is_same_v<T, Half>;
  const cuda::Stream stream = cuda::compute_stream(0);
  const Inputs in = make_inputs(l, seed, half);
  const Reference r = reference(l, in, affine, training, momentum, eps);
  const int64_t C = l.channels;
  const auto to_device = [](const std::vector<float>& v) {
    if constexpr (half) {
      return DeviceBuffer<T>(test::to_half(v));
    } else {
      return DeviceBuffer<T>(v);
    }
  };
  DeviceBuffer<T> x = to_device(in.x), g = to_device(in.g), y(l.numel()), gx(l.numel());
  DeviceBuffer<float> weight(in.weight), bias(in.bias), running_mean(in.running_mean),
      running_var(in.running_var), save_mean(C), save_invstd(C), gw(C), gb(C);
  const size_t workspace_bytes = cuda::batch_norm_workspace_bytes(l);
  DeviceBuffer<float> workspace(static_cast<int64_t>(workspace_bytes / sizeof(float)) + 1);
  for (auto* b : {&save_mean, &save_invstd, &gw, &gb}) b->poison();
  y.poison();
  gx.poison();
  workspace.poison();  // the kernels must not read workspace they did not write
  const float* w = affine ? weight.data() : nullptr;
  const float* b = affine ? bias.data() : nullptr;
  if (training) {
    cuda::batch_norm_forward_training(x.data(), w, b, track ? running_mean.data() : nullptr,
                                      track ? running_var.data() : nullptr, y.data(),
                                      save_mean.data(), save_invstd.data(), l, momentum, eps,
                                      Activation::none, workspace.data(), workspace_bytes, stream);
  } else {
    cuda::batch_norm_forward_inference(x.data(), w, b, running_mean.data(), running_var.data(),
                                       y.data(), save_mean.data(), save_invstd.data(), l, eps,
                                       Activation::none, stream);
  }
  const std::string what = std::string(half ? "f16 " : "f32 ") + l.str() +
                           (training ? " training" : " inference") + (affine ? "" : " no-affine");
  const std::vector<double> y_bound = test::relative_bound(r.y, 1e-5);
  test::check_within(test::to_float(y.download()), r.y,
                     half ? test::half_output_bound(r.y, y_bound) : y_bound, "y " + what);
  test::check_within(save_mean.download(), r.mean, test::relative_bound(r.mean, 1e-5),
                     "save_mean " + what);
  test::check_within(save_invstd.download(), r.invstd, test::relative_bound(r.invstd, 1e-5),
                     "save_invstd " + what);
  if (track || !training) {
    test::check_within(running_mean.download(), r.running_mean,
                       test::relative_bound(r.running_mean, 1e-5), "running_mean " + what);
    test::check_within(running_var.download(), r.running_var,
                       test::relative_bound(r.running_var, 1e-5), "running_var " + what);
  }
  cuda::batch_norm_backward(x.data(), g.data(), w, b, save_mean.data(), save_invstd.data(),
                            gx.data(), gw.data(), gb.data(), l, training, Activation::none,
                            workspace.data(), workspace_bytes, stream);
  const std::vector<double> gx_bound = norm_bound(r.grad_x, 1e-4);
  test::check_within(test::to_float(gx.download()), r.grad_x,
                     half ? test::half_output_bound(r.grad_x, gx_bound) : gx_bound,
                     "grad_x " + what);
  test::check_within(gw.download(), r.grad_weight, scaled(r.abs_g_xhat, 1e-4),
                     "grad_weight " + what);
  test::check_within(gb.download(), r.grad_bias, scaled(r.abs_g, 1e-4), "grad_bias " + what);
}

}  // namespace

TEST_CASE("cuda batchnorm2d: f32 training forward and backward, both formats") {
  test::skip_unless_cuda_device();
  uint32_t seed = 300;
  for (ActivationLayout l : kShapes) {
    for (MemoryFormat format : {MemoryFormat::contiguous, MemoryFormat::channels_last}) {
      l.format = format;
      CAPTURE(l.str());
      run_case<float>(l, true, true, true, 0.01, 1e-3, seed++);   // MobileNetV3's settings
      run_case<float>(l, false, false, true, 0.1, 1e-5, seed++);  // no affine, no running stats
    }
  }
}

TEST_CASE("cuda batchnorm2d: f16 activations with f32 statistics, both formats") {
  test::skip_unless_cuda_device();
  uint32_t seed = 400;
  for (ActivationLayout l : kShapes) {
    for (MemoryFormat format : {MemoryFormat::contiguous, MemoryFormat::channels_last}) {
      l.format = format;
      CAPTURE(l.str());
      run_case<Half>(l, true, true, true, 0.01, 1e-3, seed++);
    }
  }
}

TEST_CASE("cuda batchnorm2d: inference forward and backward use the running statistics") {
  test::skip_unless_cuda_device();
  uint32_t seed = 500;
  for (ActivationLayout l : kShapes) {
    for (MemoryFormat format : {MemoryFormat::contiguous, MemoryFormat::channels_last}) {
      l.format = format;
      CAPTURE(l.str());
      run_case<float>(l, true, true, false, 0.1, 1e-5, seed++);
      run_case<Half>(l, true, true, false, 0.1, 1e-3, seed++);
    }
  }
}

TEST_CASE("cuda batchnorm2d: an empty batch leaves everything alone") {
  test::skip_unless_cuda_device();
  const cuda::Stream stream = cuda::compute_stream(0);
  const ActivationLayout l{0, 4, 3, 3};
  CHECK(cuda::batch_norm_workspace_bytes(l) == 0);
  DeviceBuffer<float> running_mean(std::vector<float>{1, 2, 3, 4});
  DeviceBuffer<float> running_var(std::vector<float>{5, 6, 7, 8});
  DeviceBuffer<float> save(4);
  cuda::batch_norm_forward_training(
      static_cast<const float*>(nullptr), nullptr, nullptr, running_mean.data(), running_var.data(),
      nullptr, save.data(), save.data(), l, 0.1, 1e-5, Activation::none, nullptr, 0, stream);
  CHECK(running_mean.download() == std::vector<float>{1, 2, 3, 4});
  CHECK(running_var.download() == std::vector<float>{5, 6, 7, 8});
}

TEST_CASE("cuda batchnorm2d: bad arguments throw before touching the device") {
  test::skip_unless_cuda_build();
  const cuda::Stream stream{};
  const float* x = nullptr;
  float* out = nullptr;
  float fake_workspace[4];
  const ActivationLayout one_value{1, 5, 1, 1};
  CHECK_THROWS_WITH_AS(
      cuda::batch_norm_forward_training(x, nullptr, nullptr, nullptr, nullptr, out, out, out,
                                        one_value, 0.1, 1e-5, Activation::none, nullptr, 0, stream),
      doctest::Contains("expected more than 1 value per channel when training"),
      std::invalid_argument);
  const ActivationLayout l{2, 5, 3, 3};
  float running[5];
  CHECK_THROWS_WITH_AS(
      cuda::batch_norm_forward_training(x, nullptr, nullptr, running, nullptr, out, out, out, l,
                                        0.1, 1e-5, Activation::none, nullptr, 0, stream),
      doctest::Contains("both be given or both null"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      cuda::batch_norm_forward_training(x, nullptr, nullptr, nullptr, nullptr, out, out, out, l,
                                        0.1, -1.0, Activation::none, nullptr, 0, stream),
      doctest::Contains("eps"), std::invalid_argument);
  // Pointers are checked before the workspace: give fake (never dereferenced) ones.
  // x and out must differ (the kernels do not run in place).
  float* fake = fake_workspace;
  CHECK_THROWS_WITH_AS(
      cuda::batch_norm_forward_training(fake, nullptr, nullptr, nullptr, nullptr, fake + 1, fake,
                                        fake, l, 0.1, 1e-5, Activation::none, fake, 4, stream),
      doctest::Contains("batch_norm_workspace_bytes"), std::invalid_argument);
  CHECK(cuda::batch_norm_workspace_bytes(l) > 4);
}
