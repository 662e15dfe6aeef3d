// ReLU, Hardsigmoid and Hardswish on CUDA (layers/activations_cuda.h),
// forward and backward, f32 and f16, against PyTorch's formulas evaluated in
// double on exactly the values the kernel read (f16 inputs are rounded to
// f16 first). Outputs are poisoned with NaN before every launch.
//
// Tolerances. f32: each output is one to three f32 operations on one input,
// so it is within a few units of f32 roundoff (6e-8) of the exact value; the
// bound is 1e-5 relative to max(|expected|, 1), the project's f32 bound (also
// used for the gradients, which are as short). f16: the f32 result is
// rounded once to f16, adding 2^-11 |expected| (2^-25 near zero), see
// test::half_output_bound.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "layers/activations_cuda.h"
#include "tests/support/cuda.h"

using namespace b3;
using test::DeviceBuffer;

namespace {

double relu(double x) { return x > 0 ? x : 0; }
double relu_grad(double x) { return x > 0 ? 1 : 0; }
double hardsigmoid(double x) { return std::min(std::max(x + 3.0, 0.0), 6.0) / 6.0; }
double hardsigmoid_grad(double x) { return (x > -3.0 && x < 3.0) ? 1.0 / 6.0 : 0.0; }
double hardswish(double x) { return x * hardsigmoid(x); }
double hardswish_grad(double x) { return x < -3.0 ? 0.0 : (x > 3.0 ? 1.0 : x / 3.0 + 0.5); }

template <typename T>
using Forward = void (*)(const T*, T*, int64_t, const cuda::Stream&);
template <typename T>
using Backward = void (*)(const T*, const T*, T*, int64_t, const cuda::Stream&);

struct Case {
  const char* name;
  double (*value)(double);
  double (*slope)(double);
  Forward<float> forward_f32;
  Forward<Half> forward_f16;
  Backward<float> backward_f32;
  Backward<Half> backward_f16;
};

const Case kCases[] = {
    {"relu", relu, relu_grad, cuda::relu_forward, cuda::relu_forward, cuda::relu_backward,
     cuda::relu_backward},
    {"hardsigmoid", hardsigmoid, hardsigmoid_grad, cuda::hardsigmoid_forward,
     cuda::hardsigmoid_forward, cuda::hardsigmoid_backward, cuda::hardsigmoid_backward},
    {"hardswish", hardswish, hardswish_grad, cuda::hardswish_forward, cuda::hardswish_forward,
     cuda::hardswish_backward, cuda::hardswish_backward},
};

// Normal inputs with scale 4 (every piece of each function) plus the kinks.
std::vector<float> inputs(size_t n, uint32_t seed) {
  std::vector<float> x = test::random_normal(n, seed, 4.0);
  const float kinks[] = {-3.0f, 3.0f, 0.0f, -0.0f, -3.0001f, 2.9999f};
  for (size_t i = 0; i < std::min(n, std::size(kinks)); ++i) x[i] = kinks[i];
  return x;
}

const int64_t kSizes[] = {1, 777, (1 << 20) + 3};

}  // namespace

TEST_CASE("cuda activations: f32 forward and backward match the formulas") {
  test::skip_unless_cuda_device();
  const cuda::Stream stream = cuda::compute_stream(0);
  for (const Case& c : kCases) {
    for (int64_t n : kSizes) {
      CAPTURE(c.name);
      CAPTURE(n);
      const std::vector<float> x = inputs(static_cast<size_t>(n), 100 + static_cast<uint32_t>(n));
      const std::vector<float> gy = test::random_normal(static_cast<size_t>(n), 7);
      std::vector<double> y_expected(x.size()), gx_expected(x.size());
      for (size_t i = 0; i < x.size(); ++i) {
        y_expected[i] = c.value(x[i]);
        gx_expected[i] = double(gy[i]) * c.slope(x[i]);
      }
      DeviceBuffer<float> dx(x), dgy(gy), out(n);
      out.poison();
      c.forward_f32(dx.data(), out.data(), n, stream);
      test::check_within(out.download(), y_expected, test::relative_bound(y_expected, 1e-5),
                         std::string(c.name) + " forward f32");
      out.poison();
      c.backward_f32(dx.data(), dgy.data(), out.data(), n, stream);
      test::check_within(out.download(), gx_expected, test::relative_bound(gx_expected, 1e-5),
                         std::string(c.name) + " backward f32");
      // In place: y written over x.
      c.forward_f32(dx.data(), dx.data(), n, stream);
      test::check_within(dx.download(), y_expected, test::relative_bound(y_expected, 1e-5),
                         std::string(c.name) + " forward f32 in place");
    }
  }
}

TEST_CASE("cuda activations: f16 forward and backward round once from f32") {
  test::skip_unless_cuda_device();
  const cuda::Stream stream = cuda::compute_stream(0);
  for (const Case& c : kCases) {
    for (int64_t n : kSizes) {
      CAPTURE(c.name);
      CAPTURE(n);
      const std::vector<float> x =
          test::round_to_half(inputs(static_cast<size_t>(n), 200 + static_cast<uint32_t>(n)));
      const std::vector<float> gy = test::round_to_half(test::random_normal(x.size(), 8));
      std::vector<double> y_expected(x.size()), gx_expected(x.size());
      for (size_t i = 0; i < x.size(); ++i) {
        y_expected[i] = c.value(x[i]);
        gx_expected[i] = double(gy[i]) * c.slope(x[i]);
      }
      DeviceBuffer<Half> dx(test::to_half(x)), dgy(test::to_half(gy)), out(n);
      out.poison();
      c.forward_f16(dx.data(), out.data(), n, stream);
      test::check_within(
          test::to_float(out.download()), y_expected,
          test::half_output_bound(y_expected, test::relative_bound(y_expected, 1e-6, 0.0)),
          std::string(c.name) + " forward f16");
      out.poison();
      c.backward_f16(dx.data(), dgy.data(), out.data(), n, stream);
      test::check_within(
          test::to_float(out.download()), gx_expected,
          test::half_output_bound(gx_expected, test::relative_bound(gx_expected, 1e-6, 0.0)),
          std::string(c.name) + " backward f16");
    }
  }
}

TEST_CASE("cuda activations: bad arguments throw before touching the device") {
  test::skip_unless_cuda_build();
  const cuda::Stream stream{};
  const float* no_input = nullptr;
  float* no_output = nullptr;
  CHECK_THROWS_WITH_AS(cuda::relu_forward(no_input, no_output, -2, stream),
                       doctest::Contains("cuda::relu_forward: n = -2"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(cuda::hardswish_backward(no_input, no_input, no_output, 4, stream),
                       doctest::Contains("x is null"), std::invalid_argument);
  CHECK_NOTHROW(cuda::hardsigmoid_forward(no_input, no_output, 0, stream));
}
