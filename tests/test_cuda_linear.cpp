// Linear through cuBLAS (layers/linear_cuda.h): forward with and without
// bias, and every gradient, f32 and f16, against double-precision GEMMs on
// the same values; plus the bias kernels on their own. Outputs are poisoned
// with NaN before each call.
//
// Tolerances, per element, with S = that element's sum of |products|:
//   f32 (CUBLAS_COMPUTE_32F, no TF32): a length-K f32 dot product errs by at
//     most K * 2^-24 * S and, with the random-sign errors of blocked sums, by
//     about sqrt(K) * 2^-24 * S in practice: <= 2.2e-6 * S for K <= 1280.
//     Bound: 1e-5 * S (forward), 1e-4 * S (gradients, the project's bound).
//   f16 (f16 inputs, f32 accumulation, reduced-precision reductions
//     disallowed): the same f32 sum, rounded once to f16 (2^-11 |expected|).
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "layers/linear_cuda.h"
#include "tests/support/cuda.h"

using namespace b3;
using test::DeviceBuffer;

namespace {

struct LinearShape {
  int64_t batch, in, out;
};

const LinearShape kShapes[] = {
    {1, 1280, 10}, {3, 7, 5}, {127, 960, 1280}, {64, 33, 1000}, {2, 1, 1}};

struct Reference {
  std::vector<double> y, y_no_bias, grad_x, grad_w, grad_b;
  std::vector<double> y_abs, grad_x_abs, grad_w_abs, grad_b_abs;  // sums of |products|
};

Reference reference(const LinearShape& s, const std::vector<float>& x, const std::vector<float>& w,
                    const std::vector<float>& b, const std::vector<float>& g) {
  Reference r;
  const size_t N = static_cast<size_t>(s.batch), I = static_cast<size_t>(s.in),
               O = static_cast<size_t>(s.out);
  r.y.assign(N * O, 0.0);
  r.y_no_bias = r.y_abs = r.y;
  r.grad_x.assign(N * I, 0.0);
  r.grad_x_abs = r.grad_x;
  r.grad_w.assign(O * I, 0.0);
  r.grad_w_abs = r.grad_w;
  r.grad_b.assign(O, 0.0);
  r.grad_b_abs = r.grad_b;
  for (size_t n = 0; n < N; ++n) {
    for (size_t o = 0; o < O; ++o) {
      double sum = 0.0, sum_abs = 0.0;
      for (size_t i = 0; i < I; ++i) {
        sum += double(x[n * I + i]) * w[o * I + i];
        sum_abs += std::abs(double(x[n * I + i]) * w[o * I + i]);
      }
      r.y_no_bias[n * O + o] = sum;
      r.y[n * O + o] = sum + b[o];
      r.y_abs[n * O + o] = sum_abs + std::abs(double(b[o]));
      const double gv = g[n * O + o];
      r.grad_b[o] += gv;
      r.grad_b_abs[o] += std::abs(gv);
      for (size_t i = 0; i < I; ++i) {
        r.grad_x[n * I + i] += gv * w[o * I + i];
        r.grad_x_abs[n * I + i] += std::abs(gv * w[o * I + i]);
        r.grad_w[o * I + i] += gv * x[n * I + i];
        r.grad_w_abs[o * I + i] += std::abs(gv * x[n * I + i]);
      }
    }
  }
  return r;
}

std::vector<double> bound(const std::vector<double>& expected, const std::vector<double>& sums,
                          double factor, bool half) {
  std::vector<double> f32(sums.size());
  for (size_t i = 0; i < sums.size(); ++i) f32[i] = factor * sums[i] + 1e-30;
  return half ? test::half_output_bound(expected, f32) : f32;
}

template <typename T>
DeviceBuffer<T> device_copy(const std::vector<float>& values) {
  if constexpr (std::is_same_v<T, Half>) {
    return DeviceBuffer<T>(test::to_half(values));
  } else {
    return DeviceBuffer<T>(values);
  }
}

template <typename T>
void run_case(const LinearShape& s, uint32_t seed) {
  constexpr bool half = std::is_same_v<T, Half>;
  const cuda::Stream stream = cuda::compute_stream(0);
  const auto values = [&](int64_t n, uint32_t sd, double stddev) {
    std::vector<float> v = test::random_normal(static_cast<size_t>(n), sd, stddev);
    return half ? test::round_to_half(v) : v;
  };
  const std::vector<float> x = values(s.batch * s.in, seed, 1.0);
  const std::vector<float> w = values(s.out * s.in, seed + 1, 1.0 / std::sqrt(double(s.in)));
  const std::vector<float> b = values(s.out, seed + 2, 0.5);
  const std::vector<float> g = values(s.batch * s.out, seed + 3, 1.0);
  const Reference r = reference(s, x, w, b, g);
  LinearGeometry geometry;
  geometry.batch = s.batch;
  geometry.in_features = s.in;
  geometry.out_features = s.out;
  geometry.dtype = half ? DType::f16 : DType::f32;
  DeviceBuffer<T> dx = device_copy<T>(x), dw = device_copy<T>(w), db = device_copy<T>(b),
                  dg = device_copy<T>(g);
  DeviceBuffer<T> y(s.batch * s.out), gx(s.batch * s.in), gw(s.out * s.in), gb(s.out);
  for (auto* buffer : {&y, &gx, &gw, &gb}) buffer->poison();
  const std::string what = std::string(half ? "f16" : "f32") + " N=" + std::to_string(s.batch) +
                           " in=" + std::to_string(s.in) + " out=" + std::to_string(s.out);
  cuda::linear_forward(geometry, dx.data(), dw.data(), db.data(), y.data(), stream);
  test::check_within(test::to_float(y.download()), r.y, bound(r.y, r.y_abs, 1e-5, half),
                     "forward " + what);
  y.poison();
  cuda::linear_forward(geometry, dx.data(), dw.data(), nullptr, y.data(), stream);
  test::check_within(test::to_float(y.download()), r.y_no_bias,
                     bound(r.y_no_bias, r.y_abs, 1e-5, half), "forward without bias " + what);
  cuda::linear_backward(geometry, dx.data(), dw.data(), dg.data(), gx.data(), gw.data(), gb.data(),
                        stream);
  test::check_within(test::to_float(gx.download()), r.grad_x,
                     bound(r.grad_x, r.grad_x_abs, 1e-4, half), "grad_x " + what);
  test::check_within(test::to_float(gw.download()), r.grad_w,
                     bound(r.grad_w, r.grad_w_abs, 1e-4, half), "grad_weight " + what);
  test::check_within(test::to_float(gb.download()), r.grad_b,
                     bound(r.grad_b, r.grad_b_abs, 1e-4, half), "grad_bias " + what);
  // Only grad_weight: the other outputs stay untouched.
  gx.poison();
  gw.poison();
  gb.poison();
  cuda::linear_backward(geometry, dx.data(), nullptr, dg.data(), nullptr, gw.data(), nullptr,
                        stream);
  test::check_within(test::to_float(gw.download()), r.grad_w,
                     bound(r.grad_w, r.grad_w_abs, 1e-4, half), "grad_weight alone " + what);
  for (float v : test::to_float(gx.download())) REQUIRE(std::isnan(v));
  for (float v : test::to_float(gb.download())) REQUIRE(std::isnan(v));
}

}  // namespace

TEST_CASE("cuda linear: f32 GEMMs (no TF32) against double") {
  test::skip_unless_cuda_device();
  uint32_t seed = 900;
  for (const LinearShape& s : kShapes) run_case<float>(s, seed += 10);
}

TEST_CASE("cuda linear: f16 GEMMs with f32 accumulation against double") {
  test::skip_unless_cuda_device();
  uint32_t seed = 950;
  for (const LinearShape& s : kShapes) run_case<Half>(s, seed += 10);
}

TEST_CASE("cuda linear: empty sums give the bias or zeros") {
  test::skip_unless_cuda_device();
  const cuda::Stream stream = cuda::compute_stream(0);
  LinearGeometry g;
  g.batch = 3;
  g.in_features = 0;
  g.out_features = 4;
  DeviceBuffer<float> bias(std::vector<float>{1, 2, 3, 4}), y(12), gb(4);
  y.poison();
  cuda::linear_forward(g, nullptr, nullptr, bias.data(), y.data(), stream);
  CHECK(y.download() == std::vector<float>{1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4});
  cuda::linear_forward(g, nullptr, nullptr, nullptr, y.data(), stream);
  CHECK(y.download() == std::vector<float>(12, 0.0f));
  g.batch = 0;  // no samples: grad_bias sums nothing
  gb.poison();
  cuda::linear_backward(g, nullptr, nullptr, nullptr, nullptr, nullptr, gb.data(), stream);
  CHECK(gb.download() == std::vector<float>(4, 0.0f));
}

TEST_CASE("cuda linear: bad geometry throws before touching the device") {
  test::skip_unless_cuda_build();
  const cuda::Stream stream{};
  LinearGeometry g;
  g.batch = 2;
  g.in_features = 3;
  g.out_features = 4;
  g.dtype = DType::f64;
  CHECK_THROWS_WITH_AS(cuda::linear_forward(g, nullptr, nullptr, nullptr, nullptr, stream),
                       doctest::Contains("dtype must be f32 or f16"), std::invalid_argument);
  g.dtype = DType::f32;
  g.in_features = int64_t{1} << 40;
  CHECK_THROWS_WITH_AS(
      cuda::linear_backward(g, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, stream),
      doctest::Contains("cuBLAS's int range"), std::invalid_argument);
  g.in_features = 3;
  CHECK_THROWS_WITH_AS(cuda::linear_forward(g, nullptr, nullptr, nullptr, nullptr, stream),
                       doctest::Contains("y is null"), std::invalid_argument);
}
