// BatchNorm fused with an activation on CUDA (layers/batchnorm2d_cuda.h):
// training and inference forward (statistics, running-statistics update,
// out = act(BN(x))) and backward (grad_x, grad_weight, grad_bias from
// g = dL/d out), activations none, relu and hardswish, f32 and f16
// activations with f32 statistics, NCHW and NHWC, against a double-precision
// reference of BatchNorm followed by the activation (PyTorch's formulas)
// evaluated on exactly the values the kernels read (f16 inputs are rounded to
// f16 first; the backward reference takes the save_mean/save_invstd the
// forward kernel wrote, as the backward kernel does). Every output is
// poisoned with NaN before the launch that must write it.
//
// Tolerances (all per element, test::check_within):
// - save_mean, save_invstd, running statistics: 1e-5 relative to
//   max(|expected|, 1): Welford in f32 over runs of at most ~40 values merged
//   with Chan's formula in at most ~50 more steps is off by at most ~90 f32
//   roundoffs (2^-24) of the data's scale, ~1e-6 in practice (the bound of
//   tests/test_cuda_batchnorm2d.cpp, same kernels).
// - out (f32): the BatchNorm value y is within 1e-5 * max(|y|, 1) (same
//   argument: the statistics' error times |weight| * invstd, plus three
//   roundings), and the activation moves an error by at most its largest
//   slope L (1 for none and relu, 1.5 for hardswish, whose slope y/3 + 1/2
//   peaks at y = 3), so the bound is L * 1e-5 * max(|y|, 1).
// - grad_x (f32): 1e-4 relative to max(|expected|, 1), the project's gradient
//   bound: grad_x is gain * (gy - sum_gy / M - (x - mean) * proj), whose sums
//   (M <= 588 terms here) carry at most ~60 roundoffs of their terms'
//   magnitudes, far inside 1e-4. grad_weight and grad_bias: 1e-4 times the
//   sum of the absolute values of their terms (a sum's error scales with
//   that, not with the possibly cancelled result).
// - f16 outputs (out, grad_x) add one f16 rounding: test::half_output_bound.
// - Kinks: act'(y) jumps at y = 0 (relu) and y = -3, 3 (hardswish). The kernel
//   recomputes y in f32 from x and the saved statistics as
//   fmaf((x - mean) * invstd, weight, bias), three roundings, so it is within
//   u * (|y| + 2.01 |(x - mean) * invstd * weight|) of the exact y (u = 2^-24),
//   for f16 inputs too (y is never rounded to f16). Elements whose exact y
//   lies within four times that of a kink may take either side: they are left
//   out of the grad_x comparison (still required to be finite: written),
//   counted, and fewer than 1% of all elements may be left out; the
//   reductions get their possible jump added to the bound (sum of
//   |jump * g| and |jump * g * (x - mean)| over those elements, propagated
//   through the grad_x formula in training).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "layers/batchnorm2d_cuda.h"
#include "tests/support/cuda.h"

using namespace b3;
using test::DeviceBuffer;
using test::index_of;

namespace {

const char* name_of(Activation activation) {
  switch (activation) {
    case Activation::none: return "none";
    case Activation::relu: return "relu";
    case Activation::hardswish: return "hardswish";
    case Activation::hardsigmoid: break;  // not fused
  }
  return "?";
}

constexpr Activation kActivations[] = {Activation::none, Activation::relu, Activation::hardswish};

double activate(Activation a, double y) {
  switch (a) {
    case Activation::none: return y;
    case Activation::relu: return y > 0.0 ? y : 0.0;
    case Activation::hardswish: return y * std::min(std::max(y + 3.0, 0.0), 6.0) / 6.0;
    case Activation::hardsigmoid: break;  // not fused
  }
  return 0.0;
}

// PyTorch's derivative, including its choice at the kinks.
double slope(Activation a, double y) {
  switch (a) {
    case Activation::none: return 1.0;
    case Activation::relu: return y > 0.0 ? 1.0 : 0.0;
    case Activation::hardswish: return y < -3.0 ? 0.0 : (y > 3.0 ? 1.0 : y / 3.0 + 0.5);
    case Activation::hardsigmoid: break;  // not fused
  }
  return 0.0;
}

// The largest |slope| (how much the activation can magnify an error in y).
double lipschitz(Activation a) { return a == Activation::hardswish ? 1.5 : 1.0; }

// If y is within `window` of a kink of `a`, the largest jump of the slope
// there (else 0).
double kink_jump(Activation a, double y, double window) {
  switch (a) {
    case Activation::none: return 0.0;
    case Activation::relu: return std::abs(y) <= window ? 1.0 : 0.0;
    case Activation::hardswish:
      return (std::abs(y + 3.0) <= window || std::abs(y - 3.0) <= window) ? 0.5 : 0.0;
    case Activation::hardsigmoid: break;  // not fused
  }
  return 0.0;
}

// Batch 1 and 3; channels 5, 16, 72; spatial 1x1, 7x7, 14x14.
std::vector<ActivationLayout> shapes() {
  std::vector<ActivationLayout> out;
  for (int64_t n : {1, 3})
    for (int64_t c : {5, 16, 72})
      for (int64_t hw : {1, 7, 14}) out.push_back({n, c, hw, hw});
  return out;
}

struct Inputs {
  std::vector<float> x, g, weight, bias, running_mean, running_var;
};

// y = w * xhat + b with w ~ N(1.5, 1) and b ~ N(0, 0.5) spreads y over every
// piece of hardswish (y < -3, [-3, 3], y > 3) and both sides of relu.
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
  in.weight = test::random_normal(c, seed + 2, 1.0, 1.5);
  in.bias = test::random_normal(c, seed + 3, 0.5);
  in.running_mean = test::random_normal(c, seed + 4, 0.3, 1.0);
  in.running_var = test::random_normal(c, seed + 5, 0.5, 3.0);
  for (float& v : in.running_var) v = std::abs(v) + 0.5f;
  return in;
}

struct ForwardReference {
  std::vector<double> out, out_bound_f32;                       // in the layout
  std::vector<double> mean, invstd, running_mean, running_var;  // [C]
};

// Statistics in double from x (training) or the running statistics.
ForwardReference forward_reference(const ActivationLayout& l, const Inputs& in, bool affine,
                                   bool training, double momentum, double eps,
                                   Activation activation) {
  const int64_t C = l.channels;
  const double m = static_cast<double>(l.batch * l.spatial());
  ForwardReference r;
  r.out.assign(in.x.size(), 0.0);
  r.out_bound_f32.assign(in.x.size(), 0.0);
  for (std::vector<double>* v : {&r.mean, &r.invstd, &r.running_mean, &r.running_var}) {
    v->assign(static_cast<size_t>(C), 0.0);
  }
  for (int64_t c = 0; c < C; ++c) {
    const size_t cc = static_cast<size_t>(c);
    std::vector<size_t> idx;
    for (int64_t n = 0; n < l.batch; ++n)
      for (int64_t h = 0; h < l.height; ++h)
        for (int64_t w = 0; w < l.width; ++w) idx.push_back(index_of(l, n, c, h, w));
    double mean = 0.0, var = 0.0;
    if (training) {
      for (size_t i : idx) mean += in.x[i];
      mean /= m;
      for (size_t i : idx) var += (in.x[i] - mean) * (in.x[i] - mean);
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
    for (size_t i : idx) {
      const double y = (in.x[i] - mean) * invstd * weight + bias;
      r.out[i] = activate(activation, y);
      r.out_bound_f32[i] = lipschitz(activation) * 1e-5 * std::max(std::abs(y), 1.0);
    }
  }
  return r;
}

struct BackwardReference {
  std::vector<double> grad_x, grad_x_bound_f32;  // in the layout; bound inf = left out
  std::vector<double> grad_weight, grad_weight_bound, grad_bias, grad_bias_bound;  // [C]
  int64_t left_out = 0;  // elements within rounding of a kink
};

// From the statistics the backward kernel reads (mean, invstd: [C] as f32).
BackwardReference backward_reference(const ActivationLayout& l, const Inputs& in, bool affine,
                                     bool training, const std::vector<float>& save_mean,
                                     const std::vector<float>& save_invstd, Activation activation) {
  constexpr double u = test::kFloatUnitRoundoff;
  const int64_t C = l.channels;
  const double m = static_cast<double>(l.batch * l.spatial());
  BackwardReference r;
  r.grad_x.assign(in.x.size(), 0.0);
  r.grad_x_bound_f32.assign(in.x.size(), 0.0);
  for (std::vector<double>* v :
       {&r.grad_weight, &r.grad_weight_bound, &r.grad_bias, &r.grad_bias_bound}) {
    v->assign(static_cast<size_t>(C), 0.0);
  }
  for (int64_t c = 0; c < C; ++c) {
    const size_t cc = static_cast<size_t>(c);
    std::vector<size_t> idx;
    for (int64_t n = 0; n < l.batch; ++n)
      for (int64_t h = 0; h < l.height; ++h)
        for (int64_t w = 0; w < l.width; ++w) idx.push_back(index_of(l, n, c, h, w));
    const double mean = save_mean[cc];
    const double invstd = save_invstd[cc];
    const double weight = affine ? in.weight[cc] : 1.0;
    const double bias = affine ? in.bias[cc] : 0.0;
    std::vector<double> gy(idx.size());
    std::vector<bool> ambiguous(idx.size(), false);
    double sum_gy = 0.0, sum_gyc = 0.0, abs_gy = 0.0, abs_gyc = 0.0;
    double jump_g = 0.0, jump_gc = 0.0;  // what the ambiguous elements can move the sums by
    for (size_t k = 0; k < idx.size(); ++k) {
      const size_t i = idx[k];
      const double centered = in.x[i] - mean;
      const double scaled = centered * invstd * weight;
      const double y = scaled + bias;
      const double window = 4.0 * u * (std::abs(y) + 2.01 * std::abs(scaled));
      const double jump = kink_jump(activation, y, window);
      if (jump > 0.0) {
        ambiguous[k] = true;
        ++r.left_out;
        jump_g += jump * std::abs(in.g[i]);
        jump_gc += jump * std::abs(in.g[i] * centered);
      }
      gy[k] = slope(activation, y) * in.g[i];
      sum_gy += gy[k];
      sum_gyc += gy[k] * centered;
      abs_gy += std::abs(gy[k]);
      abs_gyc += std::abs(gy[k] * centered);
    }
    r.grad_bias[cc] = sum_gy;
    r.grad_bias_bound[cc] = 1e-4 * abs_gy + jump_g;
    r.grad_weight[cc] = sum_gyc * invstd;
    r.grad_weight_bound[cc] = (1e-4 * abs_gyc + jump_gc) * invstd;
    const double gain = weight * invstd;
    for (size_t k = 0; k < idx.size(); ++k) {
      const size_t i = idx[k];
      const double centered = in.x[i] - mean;
      double value = gain * gy[k];
      double widen = 0.0;
      if (training) {
        value = gain * (gy[k] - sum_gy / m - centered * invstd * invstd * sum_gyc / m);
        widen = std::abs(gain) * (jump_g / m + std::abs(centered) * invstd * invstd * jump_gc / m);
      }
      r.grad_x[i] = value;
      r.grad_x_bound_f32[i] = ambiguous[k] ? std::numeric_limits<double>::infinity()
                                           : 1e-4 * std::max(std::abs(value), 1.0) + widen;
    }
  }
  return r;
}

struct Tally {
  int64_t elements = 0;
  int64_t left_out = 0;
};

// One forward (training or inference) and its backward on the device,
// compared with the references. T is float or Half.
template <typename T>
void run_case(ActivationLayout l, Activation activation, bool training, bool affine,
              double momentum, double eps, uint32_t seed, Tally& tally) {
  constexpr bool half = std::is_same_v<T, Half>;
  const cuda::Stream stream = cuda::compute_stream(0);
  const Inputs in = make_inputs(l, seed, half);
  const ForwardReference f = forward_reference(l, in, affine, training, momentum, eps, activation);
  const int64_t C = l.channels;
  const auto to_device = [](const std::vector<float>& v) {
    if constexpr (half) {
      return DeviceBuffer<T>(test::to_half(v));
    } else {
      return DeviceBuffer<T>(v);
    }
  };
  DeviceBuffer<T> x = to_device(in.x), g = to_device(in.g), out(l.numel()), gx(l.numel());
  DeviceBuffer<float> weight(in.weight), bias(in.bias), running_mean(in.running_mean),
      running_var(in.running_var), save_mean(C), save_invstd(C), gw(C), gb(C);
  const size_t workspace_bytes = cuda::batch_norm_workspace_bytes(l);
  DeviceBuffer<float> workspace(static_cast<int64_t>(workspace_bytes / sizeof(float)) + 1);
  for (auto* b : {&save_mean, &save_invstd, &gw, &gb}) b->poison();
  out.poison();
  gx.poison();
  workspace.poison();  // the kernels must not read workspace they did not write
  const float* w = affine ? weight.data() : nullptr;
  const float* b = affine ? bias.data() : nullptr;
  if (training) {
    cuda::batch_norm_forward_training(x.data(), w, b, running_mean.data(), running_var.data(),
                                      out.data(), save_mean.data(), save_invstd.data(), l, momentum,
                                      eps, activation, workspace.data(), workspace_bytes, stream);
  } else {
    cuda::batch_norm_forward_inference(x.data(), w, b, running_mean.data(), running_var.data(),
                                       out.data(), save_mean.data(), save_invstd.data(), l, eps,
                                       activation, stream);
  }
  const std::string what = std::string(half ? "f16 " : "f32 ") + l.str() + " " +
                           name_of(activation) + (training ? " training" : " inference") +
                           (affine ? "" : " no-affine");
  CAPTURE(what);
  test::check_within(test::to_float(out.download()), f.out,
                     half ? test::half_output_bound(f.out, f.out_bound_f32) : f.out_bound_f32,
                     "out " + what);
  const std::vector<float> saved_mean = save_mean.download();
  const std::vector<float> saved_invstd = save_invstd.download();
  test::check_within(saved_mean, f.mean, test::relative_bound(f.mean, 1e-5), "save_mean " + what);
  test::check_within(saved_invstd, f.invstd, test::relative_bound(f.invstd, 1e-5),
                     "save_invstd " + what);
  test::check_within(running_mean.download(), f.running_mean,
                     test::relative_bound(f.running_mean, 1e-5), "running_mean " + what);
  test::check_within(running_var.download(), f.running_var,
                     test::relative_bound(f.running_var, 1e-5), "running_var " + what);

  cuda::batch_norm_backward(x.data(), g.data(), w, b, save_mean.data(), save_invstd.data(),
                            gx.data(), gw.data(), gb.data(), l, training, activation,
                            workspace.data(), workspace_bytes, stream);
  const BackwardReference r =
      backward_reference(l, in, affine, training, saved_mean, saved_invstd, activation);
  test::check_within(
      test::to_float(gx.download()), r.grad_x,
      half ? test::half_output_bound(r.grad_x, r.grad_x_bound_f32) : r.grad_x_bound_f32,
      "grad_x " + what);
  test::check_within(gw.download(), r.grad_weight, r.grad_weight_bound, "grad_weight " + what);
  test::check_within(gb.download(), r.grad_bias, r.grad_bias_bound, "grad_bias " + what);
  tally.elements += l.numel();
  tally.left_out += r.left_out;
}

// Every shape, both formats, every activation; training skips the shapes
// with one value per channel (batch 1, 1x1), which training rejects.
template <typename T>
void run_all(bool training, uint32_t seed) {
  Tally tally;
  for (ActivationLayout l : shapes()) {
    if (training && l.batch * l.spatial() <= 1) continue;
    for (MemoryFormat format : {MemoryFormat::contiguous, MemoryFormat::channels_last}) {
      l.format = format;
      for (Activation activation : kActivations) {
        // MobileNetV3's BatchNorm settings: momentum 0.01, eps 1e-3.
        run_case<T>(l, activation, training, true, 0.01, 1e-3, seed++, tally);
      }
    }
  }
  INFO("left out near a kink: " << tally.left_out << " of " << tally.elements);
  CHECK(tally.elements > 0);
  CHECK(tally.left_out * 100 < tally.elements);
}

}  // namespace

TEST_CASE("cuda batchnorm_activation: f32 training forward and backward") {
  test::skip_unless_cuda_device();
  run_all<float>(true, 1000);
}

TEST_CASE("cuda batchnorm_activation: f16 training forward and backward (f32 statistics)") {
  test::skip_unless_cuda_device();
  run_all<Half>(true, 2000);
}

TEST_CASE("cuda batchnorm_activation: f32 inference forward and backward") {
  test::skip_unless_cuda_device();
  run_all<float>(false, 3000);
}

TEST_CASE("cuda batchnorm_activation: f16 inference forward and backward (f32 statistics)") {
  test::skip_unless_cuda_device();
  run_all<Half>(false, 4000);
}

TEST_CASE("cuda batchnorm_activation: no affine (null weight and bias)") {
  test::skip_unless_cuda_device();
  Tally tally;
  uint32_t seed = 5000;
  for (ActivationLayout l : {ActivationLayout{3, 5, 7, 7}, ActivationLayout{3, 72, 1, 1}}) {
    for (MemoryFormat format : {MemoryFormat::contiguous, MemoryFormat::channels_last}) {
      l.format = format;
      for (Activation activation : kActivations) {
        for (bool training : {true, false}) {
          run_case<float>(l, activation, training, false, 0.1, 1e-5, seed++, tally);
          run_case<Half>(l, activation, training, false, 0.1, 1e-5, seed++, tally);
        }
      }
    }
  }
  CHECK(tally.left_out * 100 < tally.elements);
}

TEST_CASE("cuda batchnorm_activation: an empty batch leaves everything alone") {
  test::skip_unless_cuda_device();
  const cuda::Stream stream = cuda::compute_stream(0);
  const ActivationLayout l{0, 4, 3, 3};
  CHECK(cuda::batch_norm_workspace_bytes(l) == 0);
  DeviceBuffer<float> running_mean(std::vector<float>{1, 2, 3, 4});
  DeviceBuffer<float> running_var(std::vector<float>{5, 6, 7, 8});
  DeviceBuffer<float> save(4);
  cuda::batch_norm_forward_training(
      static_cast<const float*>(nullptr), nullptr, nullptr, running_mean.data(), running_var.data(),
      nullptr, save.data(), save.data(), l, 0.1, 1e-5, Activation::relu, nullptr, 0, stream);
  cuda::batch_norm_backward(static_cast<const float*>(nullptr), nullptr, nullptr, nullptr, nullptr,
                            nullptr, nullptr, nullptr, nullptr, l, true, Activation::hardswish,
                            nullptr, 0, stream);
  CHECK(running_mean.download() == std::vector<float>{1, 2, 3, 4});
  CHECK(running_var.download() == std::vector<float>{5, 6, 7, 8});
}

TEST_CASE("cuda batchnorm_activation: bad arguments throw before touching the device") {
  test::skip_unless_cuda_device();
  const cuda::Stream stream{};
  const float* x = nullptr;
  float* out = nullptr;
  float fake_workspace[4];
  float* fake = fake_workspace;  // never dereferenced: the checks throw first
  const ActivationLayout one_value{1, 5, 1, 1};
  CHECK_THROWS_WITH_AS(
      cuda::batch_norm_forward_training(x, nullptr, nullptr, nullptr, nullptr, out, out, out,
                                        one_value, 0.1, 1e-5, Activation::relu, nullptr, 0, stream),
      doctest::Contains("expected more than 1 value per channel when training"),
      std::invalid_argument);
  const ActivationLayout l{2, 5, 3, 3};
  float running[5];
  CHECK_THROWS_WITH_AS(
      cuda::batch_norm_forward_training(x, nullptr, nullptr, running, nullptr, out, out, out, l,
                                        0.1, 1e-5, Activation::relu, nullptr, 0, stream),
      doctest::Contains("both be given or both null"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      cuda::batch_norm_forward_training(x, nullptr, nullptr, nullptr, nullptr, out, out, out, l,
                                        0.1, -1.0, Activation::relu, nullptr, 0, stream),
      doctest::Contains("eps"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      cuda::batch_norm_forward_training(fake, nullptr, nullptr, nullptr, nullptr, fake, fake, fake,
                                        l, 0.1, 1e-5, static_cast<Activation>(7), fake, 4, stream),
      doctest::Contains("unknown activation"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      cuda::batch_norm_forward_training(fake, nullptr, nullptr, nullptr, nullptr, fake, fake, fake,
                                        l, 0.1, 1e-5, Activation::relu, fake, 4, stream),
      doctest::Contains("same memory"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      cuda::batch_norm_forward_training(fake, nullptr, nullptr, nullptr, nullptr, running, fake,
                                        fake, l, 0.1, 1e-5, Activation::relu, fake, 4, stream),
      doctest::Contains("batch_norm_workspace_bytes"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      cuda::batch_norm_forward_inference(fake, nullptr, nullptr, nullptr, fake, running, fake, fake,
                                         l, 1e-5, Activation::hardswish, stream),
      doctest::Contains("running_mean is null"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      cuda::batch_norm_backward(fake, running, nullptr, nullptr, fake, fake, running, nullptr,
                                nullptr, l, true, Activation::relu, fake, 4, stream),
      doctest::Contains("same memory"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      cuda::batch_norm_backward(fake, running, nullptr, nullptr, fake, fake, nullptr, nullptr,
                                nullptr, l, true, Activation::relu, fake, 4, stream),
      doctest::Contains("batch_norm_workspace_bytes"), std::invalid_argument);
  CHECK(cuda::batch_norm_workspace_bytes(l) > 4);
}
