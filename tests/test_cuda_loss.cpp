// Cross-entropy on CUDA (layers/loss_cuda.h), forward and backward, f32 and
// f16 logits, i64 and i32 targets, against a double reference on the same
// logits. Outputs are poisoned before each launch.
//
// Tolerances. The loss is computed in f32 for either logit dtype. Each row's
// log-sum-exp adds K positive terms in f32 (32 lanes of K/32 terms, then a
// 5-step tree): relative error of the sum <= (K/32 + 5) * 2^-24, i.e. an
// absolute error of the log below 3e-6 for K = 1000, plus a few ulps from
// expf/logf and from m + log(sum) (~2^-24 |lse|). The mean over N rows adds
// at most 10 * 2^-24 relative (a 1024-thread tree). All of it stays below
// 1e-5 * max(|loss|, 1). Gradients: p = exp(z - lse) carries the lse error
// (~3e-6 absolute in the exponent) and the f32 rounding of z - lse, so each
// gradient is within 1e-5 of (|p| + 1) * |g| / N; the bound used is 1e-4
// relative to max(|expected|, |g| / N), the project's gradient bound. f16
// gradients add one rounding (test::half_output_bound).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "layers/loss_cuda.h"
#include "tests/support/cuda.h"

using namespace b3;
using test::DeviceBuffer;

namespace {

struct LossShape {
  int64_t batch;
  int64_t classes;
};

const LossShape kShapes[] = {{1, 10}, {3, 1000}, {127, 10}, {5, 1}, {64, 37}};

struct Reference {
  double loss = 0.0;
  std::vector<double> lse;
  std::vector<double> grad;
};

template <typename Target>
Reference reference(const std::vector<float>& z, const std::vector<Target>& t, int64_t n, int64_t k,
                    double grad_loss) {
  Reference r;
  r.lse.resize(static_cast<size_t>(n));
  r.grad.resize(z.size());
  for (int64_t row = 0; row < n; ++row) {
    const float* zr = z.data() + row * k;
    double m = -INFINITY;
    for (int64_t c = 0; c < k; ++c) m = std::max(m, double(zr[c]));
    double sum = 0.0;
    for (int64_t c = 0; c < k; ++c) sum += std::exp(double(zr[c]) - m);
    const double lse = m + std::log(sum);
    r.lse[static_cast<size_t>(row)] = lse;
    r.loss += lse - zr[t[static_cast<size_t>(row)]];
    for (int64_t c = 0; c < k; ++c) {
      const double p = std::exp(double(zr[c]) - lse);
      r.grad[static_cast<size_t>(row * k + c)] =
          (p - (c == static_cast<int64_t>(t[static_cast<size_t>(row)]) ? 1.0 : 0.0)) * grad_loss /
          static_cast<double>(n);
    }
  }
  r.loss /= static_cast<double>(n);
  return r;
}

std::vector<float> logits(int64_t n, int64_t k, uint32_t seed, bool extreme_row) {
  std::vector<float> z = test::random_normal(static_cast<size_t>(n * k), seed, 3.0);
  if (extreme_row && n > 1) {  // a row at +-1000: the max-shift must keep it finite
    for (int64_t c = 0; c < k; ++c) z[static_cast<size_t>(k + c)] = c % 2 == 0 ? 1000.0f : -1000.0f;
  }
  return z;
}

template <typename Target>
std::vector<Target> targets(int64_t n, int64_t k, uint32_t seed) {
  std::mt19937 engine(seed);
  std::uniform_int_distribution<int64_t> pick(0, k - 1);
  std::vector<Target> t(static_cast<size_t>(n));
  for (Target& v : t) v = static_cast<Target>(pick(engine));
  return t;
}

std::vector<double> gradient_bound(const Reference& r, double grad_loss, int64_t n) {
  return test::relative_bound(r.grad, 1e-4, std::abs(grad_loss) / static_cast<double>(n));
}

template <typename Logit, typename Target>
void run_case(const LossShape& s, bool half, uint32_t seed) {
  const cuda::Stream stream = cuda::compute_stream(0);
  std::vector<float> z = logits(s.batch, s.classes, seed, !half);
  if (half) z = test::round_to_half(z);
  const std::vector<Target> t = targets<Target>(s.batch, s.classes, seed + 1);
  const double grad_loss = 2.5;  // an upstream gradient, e.g. a loss scale
  const Reference r = reference(z, t, s.batch, s.classes, grad_loss);

  std::vector<Logit> host_logits;
  if constexpr (std::is_same_v<Logit, Half>) {
    host_logits = test::to_half(z);
  } else {
    host_logits = z;
  }
  DeviceBuffer<Logit> dz(host_logits), grad(s.batch * s.classes);
  DeviceBuffer<Target> dt(t);
  DeviceBuffer<float> lse(s.batch), loss(1), dgl(std::vector<float>{static_cast<float>(grad_loss)});
  lse.poison();
  loss.poison();
  grad.poison();
  cuda::cross_entropy_forward(dz.data(), dt.data(), s.batch, s.classes, lse.data(), loss.data(),
                              stream);
  const std::string what = std::string(half ? "f16" : "f32") + " [" + std::to_string(s.batch) +
                           ", " + std::to_string(s.classes) + "]";
  test::check_within(loss.download(), {r.loss}, test::relative_bound({r.loss}, 1e-5),
                     "loss " + what);
  test::check_within(lse.download(), r.lse, test::relative_bound(r.lse, 1e-5),
                     "row logsumexp " + what);
  cuda::cross_entropy_backward(dz.data(), dt.data(), lse.data(), dgl.data(), s.batch, s.classes,
                               grad.data(), stream);
  const std::vector<double> bound = gradient_bound(r, grad_loss, s.batch);
  test::check_within(test::to_float(grad.download()), r.grad,
                     half ? test::half_output_bound(r.grad, bound) : bound, "gradient " + what);
}

}  // namespace

TEST_CASE("cuda cross-entropy: f32 logits, i64 and i32 targets") {
  test::skip_unless_cuda_device();
  uint32_t seed = 70;
  for (const LossShape& s : kShapes) {
    CAPTURE(s.batch);
    CAPTURE(s.classes);
    run_case<float, int64_t>(s, false, seed++);
    run_case<float, int32_t>(s, false, seed++);
  }
}

TEST_CASE("cuda cross-entropy: f16 logits, f32 loss") {
  test::skip_unless_cuda_device();
  uint32_t seed = 90;
  for (const LossShape& s : kShapes) {
    CAPTURE(s.batch);
    CAPTURE(s.classes);
    run_case<Half, int64_t>(s, true, seed++);
    run_case<Half, int32_t>(s, true, seed++);
  }
}

TEST_CASE("cuda cross-entropy: a target out of range makes the loss and its row NaN") {
  test::skip_unless_cuda_device();
  const cuda::Stream stream = cuda::compute_stream(0);
  const int64_t n = 3, k = 4;
  DeviceBuffer<float> dz(test::random_normal(static_cast<size_t>(n * k), 5));
  DeviceBuffer<int64_t> dt(std::vector<int64_t>{1, 4, 0});  // 4 is out of range
  DeviceBuffer<float> lse(n), loss(1), grad(n * k), dgl(std::vector<float>{1.0f});
  cuda::cross_entropy_forward(dz.data(), dt.data(), n, k, lse.data(), loss.data(), stream);
  CHECK(std::isnan(loss.download()[0]));
  cuda::cross_entropy_backward(dz.data(), dt.data(), lse.data(), dgl.data(), n, k, grad.data(),
                               stream);
  const std::vector<float> g = grad.download();
  for (int64_t c = 0; c < k; ++c) {
    CHECK(std::isfinite(g[static_cast<size_t>(c)]));          // row 0 is fine
    CHECK(std::isnan(g[static_cast<size_t>(k + c)]));         // row 1 is poisoned
    CHECK(std::isfinite(g[static_cast<size_t>(2 * k + c)]));  // row 2 is fine
  }
}

TEST_CASE("cuda cross-entropy: bad arguments throw before touching the device") {
  test::skip_unless_cuda_build();
  const cuda::Stream stream{};
  const float* z = nullptr;
  const int64_t* t = nullptr;
  float* out = nullptr;
  CHECK_THROWS_WITH_AS(cuda::cross_entropy_forward(z, t, 0, 10, out, out, stream),
                       doctest::Contains("empty batch"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(cuda::cross_entropy_forward(z, t, 4, 0, out, out, stream),
                       doctest::Contains("0 classes"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(cuda::cross_entropy_forward(z, t, 4, 10, out, out, stream),
                       doctest::Contains("logits is null"), std::invalid_argument);
}
