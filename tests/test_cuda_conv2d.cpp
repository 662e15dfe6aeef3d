// Convolutions through cuDNN (layers/conv2d_cuda.h): forward, backward data,
// backward filter and bias, f32 and f16, NCHW and NHWC, regular, depthwise,
// pointwise and grouped shapes from MobileNetV3, with both algorithm searches,
// against a direct double-precision convolution on the same values.
// Outputs are poisoned with NaN before each call.
//
// Tolerances, per output element, with S = the largest sum of |products|
// that any output element of the tensor adds up (the scale of every rounding
// error of the sum):
//   f32 (FMA math, no TF32): a length-K f32 sum errs by at most K * 2^-24 * S
//     term by term; cuDNN's FFT and Winograd algorithms are accurate to a few
//     times 2^-24 * S * log(size) norm-wise. K <= 576 here, and random-sign
//     errors grow like sqrt(K): 1e-5 * S for the forward, 1e-4 * S for the
//     gradients (the project's gradient bound; backward filter sums over
//     N * Ho * Wo products).
//   f16 (f16 data, f32 accumulation, Tensor Cores): products of f16 values
//     are exact in f32 and summed in f32 as above; the result is rounded once
//     to f16 (2^-11 |expected|). Some cuDNN algorithms also keep transformed
//     tiles (Winograd, FFT) or partial sums in f16 workspace, which adds at
//     most about one f16 rounding at the scale of S: 2^-10 * S is allowed.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "layers/conv2d_cuda.h"
#include "tests/support/cuda.h"

using namespace b3;
using test::DeviceBuffer;

namespace {

// Geometry without dtype and format (set per run).
Conv2dGeometry shape(int64_t n, int64_t cin, int64_t h, int64_t w, int64_t cout, int64_t k,
                     int64_t stride, int64_t pad, int64_t groups) {
  return conv2d_geometry(n, cin, h, w, cout, k, stride, pad, groups);
}

const Conv2dGeometry kShapes[] = {
    shape(2, 16, 9, 9, 24, 3, 1, 1, 1),     // regular 3x3
    shape(3, 16, 10, 10, 16, 3, 2, 1, 16),  // depthwise, stride 2
    shape(2, 24, 7, 7, 40, 1, 1, 0, 1),     // pointwise
    shape(1, 3, 11, 11, 16, 3, 2, 1, 1),    // the stem: 3 input channels
    shape(2, 40, 7, 7, 40, 5, 1, 2, 40),    // depthwise 5x5
    shape(2, 8, 6, 6, 12, 3, 1, 0, 2),      // grouped, no padding
    shape(4, 96, 7, 7, 576, 1, 1, 0, 1),    // wide pointwise (K = 96)
    shape(3, 7, 5, 9, 5, 3, 2, 0, 1),       // odd everything
};

// Logical NCHW (or [Cout, Cin/g, k, k]) order <-> memory order of `format`.
std::vector<float> to_memory(const std::vector<float>& logical, int64_t n, int64_t c, int64_t h,
                             int64_t w, MemoryFormat format) {
  if (format == MemoryFormat::contiguous) return logical;
  std::vector<float> out(logical.size());
  for (int64_t a = 0; a < n; ++a)
    for (int64_t b = 0; b < c; ++b)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x)
          out[static_cast<size_t>(((a * h + y) * w + x) * c + b)] =
              logical[static_cast<size_t>(((a * c + b) * h + y) * w + x)];
  return out;
}

std::vector<float> to_logical(const std::vector<float>& memory, int64_t n, int64_t c, int64_t h,
                              int64_t w, MemoryFormat format) {
  if (format == MemoryFormat::contiguous) return memory;
  std::vector<float> out(memory.size());
  for (int64_t a = 0; a < n; ++a)
    for (int64_t b = 0; b < c; ++b)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x)
          out[static_cast<size_t>(((a * c + b) * h + y) * w + x)] =
              memory[static_cast<size_t>(((a * h + y) * w + x) * c + b)];
  return out;
}

struct Reference {
  std::vector<double> y, grad_x, grad_w, grad_b;                             // logical order
  double y_scale = 0, grad_x_scale = 0, grad_w_scale = 0, grad_b_scale = 0;  // S of each
};

Reference reference(const Conv2dGeometry& g, const std::vector<float>& x,
                    const std::vector<float>& w, const std::vector<float>& b,
                    const std::vector<float>& gy) {
  const int64_t N = g.batch, Cin = g.in_channels, H = g.in_height, W = g.in_width;
  const int64_t Cout = g.out_channels, K = g.kernel, Ho = g.out_height, Wo = g.out_width;
  const int64_t cin_g = Cin / g.groups, cout_g = Cout / g.groups;
  Reference r;
  r.y.assign(static_cast<size_t>(N * Cout * Ho * Wo), 0.0);
  r.grad_x.assign(x.size(), 0.0);
  r.grad_w.assign(w.size(), 0.0);
  r.grad_b.assign(static_cast<size_t>(Cout), 0.0);
  std::vector<double> y_abs(r.y.size()), gx_abs(r.grad_x.size()), gw_abs(r.grad_w.size()),
      gb_abs(r.grad_b.size());
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t co = 0; co < Cout; ++co) {
      const int64_t group = co / cout_g;
      for (int64_t oy = 0; oy < Ho; ++oy) {
        for (int64_t ox = 0; ox < Wo; ++ox) {
          const size_t yi = static_cast<size_t>(((n * Cout + co) * Ho + oy) * Wo + ox);
          double sum = b[static_cast<size_t>(co)];
          double sum_abs = std::abs(double(b[static_cast<size_t>(co)]));
          const double gyv = gy[yi];
          r.grad_b[static_cast<size_t>(co)] += gyv;
          gb_abs[static_cast<size_t>(co)] += std::abs(gyv);
          for (int64_t cl = 0; cl < cin_g; ++cl) {
            const int64_t ci = group * cin_g + cl;
            for (int64_t ky = 0; ky < K; ++ky) {
              const int64_t iy = oy * g.stride + ky - g.padding;
              if (iy < 0 || iy >= H) continue;
              for (int64_t kx = 0; kx < K; ++kx) {
                const int64_t ix = ox * g.stride + kx - g.padding;
                if (ix < 0 || ix >= W) continue;
                const size_t xi = static_cast<size_t>(((n * Cin + ci) * H + iy) * W + ix);
                const size_t wi = static_cast<size_t>(((co * cin_g + cl) * K + ky) * K + kx);
                sum += double(w[wi]) * x[xi];
                sum_abs += std::abs(double(w[wi]) * x[xi]);
                r.grad_x[xi] += double(w[wi]) * gyv;
                gx_abs[xi] += std::abs(double(w[wi]) * gyv);
                r.grad_w[wi] += gyv * x[xi];
                gw_abs[wi] += std::abs(gyv * x[xi]);
              }
            }
          }
          r.y[yi] = sum;
          y_abs[yi] = sum_abs;
        }
      }
    }
  }
  r.y_scale = test::max_abs(y_abs);
  r.grad_x_scale = test::max_abs(gx_abs);
  r.grad_w_scale = test::max_abs(gw_abs);
  r.grad_b_scale = test::max_abs(gb_abs);
  return r;
}

// The bound of the header comment: f32 -> factor * S; f16 -> one rounding of
// the result plus 2^-10 * S (and the f32 part).
std::vector<double> bound(const std::vector<double>& expected, double scale, double factor,
                          bool half) {
  std::vector<double> f32(expected.size(), factor * scale + 1e-30);
  if (!half) return f32;
  std::vector<double> b = test::half_output_bound(expected, f32);
  for (double& v : b) v += scale / 1024.0;
  return b;
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
void run_case(Conv2dGeometry g, MemoryFormat format, cuda::ConvAlgorithmSearch search,
              uint32_t seed) {
  constexpr bool half = std::is_same_v<T, Half>;
  g.format = format;
  g.dtype = half ? DType::f16 : DType::f32;
  const cuda::Stream stream = cuda::compute_stream(0);
  cuda::ConvAlgorithmPolicy policy;
  policy.search = search;
  const int64_t N = g.batch, Cin = g.in_channels, H = g.in_height, W = g.in_width;
  const int64_t Cout = g.out_channels, K = g.kernel, Ho = g.out_height, Wo = g.out_width;
  const int64_t cin_g = Cin / g.groups;
  // Logical-order inputs (rounded to f16 for the f16 run: what the GPU reads).
  const auto values = [&](size_t n, uint32_t s, double stddev) {
    std::vector<float> v = test::random_normal(n, s, stddev);
    return half ? test::round_to_half(v) : v;
  };
  const std::vector<float> x = values(static_cast<size_t>(N * Cin * H * W), seed, 1.0);
  const std::vector<float> w =
      values(static_cast<size_t>(Cout * cin_g * K * K), seed + 1, 1.0 / std::sqrt(cin_g * K * K));
  const std::vector<float> b = values(static_cast<size_t>(Cout), seed + 2, 0.5);
  const std::vector<float> gy = values(static_cast<size_t>(N * Cout * Ho * Wo), seed + 3, 1.0);
  const Reference r = reference(g, x, w, b, gy);

  DeviceBuffer<T> dx = device_copy<T>(to_memory(x, N, Cin, H, W, format));
  DeviceBuffer<T> dw = device_copy<T>(to_memory(w, Cout, cin_g, K, K, format));
  DeviceBuffer<T> db = device_copy<T>(b);
  DeviceBuffer<T> dgy = device_copy<T>(to_memory(gy, N, Cout, Ho, Wo, format));
  DeviceBuffer<T> y(N * Cout * Ho * Wo), gx(N * Cin * H * W), gw(Cout * cin_g * K * K), gb(Cout);
  for (auto* buffer : {&y, &gx, &gw, &gb}) buffer->poison();

  const std::string what =
      g.str() + (search == cuda::ConvAlgorithmSearch::benchmark ? " benchmark" : " heuristic");
  cuda::conv2d_forward(g, dx.data(), dw.data(), db.data(), y.data(), stream, policy);
  test::check_within(to_logical(test::to_float(y.download()), N, Cout, Ho, Wo, format), r.y,
                     bound(r.y, r.y_scale, 1e-5, half), "forward " + what);
  cuda::conv2d_backward_data(g, dw.data(), dgy.data(), gx.data(), stream, policy);
  test::check_within(to_logical(test::to_float(gx.download()), N, Cin, H, W, format), r.grad_x,
                     bound(r.grad_x, r.grad_x_scale, 1e-4, half), "backward data " + what);
  cuda::conv2d_backward_filter(g, dx.data(), dgy.data(), gw.data(), stream, policy);
  test::check_within(to_logical(test::to_float(gw.download()), Cout, cin_g, K, K, format), r.grad_w,
                     bound(r.grad_w, r.grad_w_scale, 1e-4, half), "backward filter " + what);
  cuda::conv2d_backward_bias(g, dgy.data(), gb.data(), stream);
  test::check_within(test::to_float(gb.download()), r.grad_b,
                     bound(r.grad_b, r.grad_b_scale, 1e-4, half), "backward bias " + what);
  // Without a bias the forward is the convolution alone.
  y.poison();
  cuda::conv2d_forward(g, dx.data(), dw.data(), nullptr, y.data(), stream, policy);
  std::vector<double> no_bias = r.y;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t co = 0; co < Cout; ++co)
      for (int64_t i = 0; i < Ho * Wo; ++i)
        no_bias[static_cast<size_t>((n * Cout + co) * Ho * Wo + i)] -= b[static_cast<size_t>(co)];
  test::check_within(to_logical(test::to_float(y.download()), N, Cout, Ho, Wo, format), no_bias,
                     bound(no_bias, r.y_scale, 1e-5, half), "forward without bias " + what);
}

}  // namespace

TEST_CASE("cuda conv2d: f32 (no TF32) against a direct convolution, both formats") {
  test::skip_unless_cuda_device();
  uint32_t seed = 600;
  for (const Conv2dGeometry& g : kShapes) {
    for (MemoryFormat format : {MemoryFormat::contiguous, MemoryFormat::channels_last}) {
      CAPTURE(g.str());
      run_case<float>(g, format, cuda::ConvAlgorithmSearch::benchmark, seed++);
    }
  }
}

TEST_CASE("cuda conv2d: f16 with f32 accumulation, both formats, both searches") {
  test::skip_unless_cuda_device();
  uint32_t seed = 700;
  for (const Conv2dGeometry& g : kShapes) {
    for (MemoryFormat format : {MemoryFormat::contiguous, MemoryFormat::channels_last}) {
      CAPTURE(g.str());
      run_case<Half>(g, format, cuda::ConvAlgorithmSearch::benchmark, seed++);
      if (format == MemoryFormat::channels_last) {
        run_case<Half>(g, format, cuda::ConvAlgorithmSearch::heuristic, seed++);
      }
    }
  }
}

TEST_CASE("cuda conv2d: the chosen algorithms are cached and reportable") {
  test::skip_unless_cuda_device();
  run_case<Half>(kShapes[0], MemoryFormat::channels_last, cuda::ConvAlgorithmSearch::benchmark,
                 800);
  Conv2dGeometry g = kShapes[0];
  g.format = MemoryFormat::channels_last;
  g.dtype = DType::f16;
  const std::string report = cuda::conv_algorithm_report(0);
  INFO(report);
  CHECK(report.find(g.str()) != std::string::npos);
  CHECK(report.find("forward") != std::string::npos);
  CHECK(report.find("backward data") != std::string::npos);
  CHECK(report.find("backward filter") != std::string::npos);
  CHECK(report.find(" ms") != std::string::npos);  // benchmarked: timings are listed
  // The same shape again is served from the cache (and still correct).
  run_case<Half>(kShapes[0], MemoryFormat::channels_last, cuda::ConvAlgorithmSearch::benchmark,
                 801);
  CHECK(cuda::conv_algorithm_report(0) == report);
}

TEST_CASE("cuda conv2d: bad geometry throws before touching the device") {
  test::skip_unless_cuda_build();
  const cuda::Stream stream{};
  Conv2dGeometry g = shape(2, 6, 8, 8, 9, 3, 1, 1, 4);  // 4 divides neither 6 nor 9
  CHECK_THROWS_WITH_AS(cuda::conv2d_forward(g, nullptr, nullptr, nullptr, nullptr, stream),
                       doctest::Contains("groups must divide"), std::invalid_argument);
  g = shape(2, 6, 2, 2, 6, 5, 1, 0, 1);
  CHECK_THROWS_WITH_AS(cuda::conv2d_backward_data(g, nullptr, nullptr, nullptr, stream),
                       doctest::Contains("larger than the padded input"), std::invalid_argument);
  g = shape(2, 6, 8, 8, 6, 3, 1, 1, 1);
  g.dtype = DType::f64;
  CHECK_THROWS_WITH_AS(cuda::conv2d_backward_filter(g, nullptr, nullptr, nullptr, stream),
                       doctest::Contains("dtype f64 is not supported"), std::invalid_argument);
  g.dtype = DType::f32;
  CHECK_THROWS_WITH_AS(cuda::conv2d_forward(g, nullptr, nullptr, nullptr, nullptr, stream),
                       doctest::Contains("x is null"), std::invalid_argument);
  g = shape(70000, 1024, 1024, 1024, 8, 1, 1, 0, 1);
  CHECK_THROWS_WITH_AS(cuda::conv2d_forward(g, nullptr, nullptr, nullptr, nullptr, stream),
                       doctest::Contains("cuDNN's int range"), std::invalid_argument);
}
