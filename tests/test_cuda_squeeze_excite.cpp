// Squeeze-excitation's channel scale on CUDA (layers/squeeze_excite_cuda.h),
// forward and backward, f32 and f16, NCHW and NHWC, against a double
// reference on the same input values. Outputs are poisoned before launches.
//
// Tolerances. out = x * s and grad_x = g * s are one f32 product each: 1e-5
// relative to max(|expected|, 1) is far above their one rounding. grad_scale
// = sum over H*W of g * x is a sum in f32 in chunks (see test_cuda_pooling),
// error <= (H*W/8 + 9) * 2^-24 * sum |g x| <= 2.1e-6 * sum |g x| for 14x14,
// bounded here by 1e-5 * sum |g x| (the sum can cancel, so the bound scales
// with the absolute terms, not with the result). f16 adds one rounding of
// each output (test::half_output_bound).
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "layers/squeeze_excite_cuda.h"
#include "tests/support/cuda.h"

using namespace b3;
using test::DeviceBuffer;
using test::index_of;

namespace {

const ActivationLayout kShapes[] = {
    {1, 3, 7, 7}, {3, 5, 1, 1}, {2, 13, 5, 3}, {4, 40, 14, 14}, {127, 8, 7, 7},
};

struct Reference {
  std::vector<double> out, grad_x;            // in the layout
  std::vector<double> grad_scale, abs_terms;  // [N*C]
};

Reference reference(const ActivationLayout& l, const std::vector<float>& x,
                    const std::vector<float>& s, const std::vector<float>& g) {
  Reference r;
  r.out.assign(x.size(), 0.0);
  r.grad_x = r.out;
  r.grad_scale.assign(s.size(), 0.0);
  r.abs_terms = r.grad_scale;
  for (int64_t n = 0; n < l.batch; ++n) {
    for (int64_t c = 0; c < l.channels; ++c) {
      const size_t row = static_cast<size_t>(n * l.channels + c);
      for (int64_t h = 0; h < l.height; ++h) {
        for (int64_t w = 0; w < l.width; ++w) {
          const size_t i = index_of(l, n, c, h, w);
          r.out[i] = double(x[i]) * s[row];
          r.grad_x[i] = double(g[i]) * s[row];
          r.grad_scale[row] += double(g[i]) * x[i];
          r.abs_terms[row] += std::abs(double(g[i]) * x[i]);
        }
      }
    }
  }
  return r;
}

std::vector<double> scaled(const std::vector<double>& magnitudes, double factor) {
  std::vector<double> bound(magnitudes.size());
  for (size_t i = 0; i < bound.size(); ++i) bound[i] = factor * magnitudes[i];
  return bound;
}

}  // namespace

TEST_CASE("cuda squeeze-excite: f32 channel scale forward and backward, both formats") {
  test::skip_unless_cuda_device();
  const cuda::Stream stream = cuda::compute_stream(0);
  for (ActivationLayout l : kShapes) {
    for (MemoryFormat format : {MemoryFormat::contiguous, MemoryFormat::channels_last}) {
      l.format = format;
      CAPTURE(l.str());
      const size_t rows = static_cast<size_t>(l.batch * l.channels);
      const std::vector<float> x = test::random_normal(static_cast<size_t>(l.numel()), 51);
      const std::vector<float> g = test::random_normal(static_cast<size_t>(l.numel()), 52);
      std::vector<float> s = test::random_normal(rows, 53, 0.3, 0.5);  // like hardsigmoid output
      const Reference r = reference(l, x, s, g);
      DeviceBuffer<float> dx(x), ds(s), dg(g), out(l.numel()), gx(l.numel()),
          gs(static_cast<int64_t>(rows));
      out.poison();
      gx.poison();
      gs.poison();
      cuda::channel_scale_forward(dx.data(), ds.data(), out.data(), l, stream);
      test::check_within(out.download(), r.out, test::relative_bound(r.out, 1e-5),
                         "channel_scale forward f32 " + l.str());
      cuda::channel_scale_backward(dx.data(), ds.data(), dg.data(), gx.data(), gs.data(), l,
                                   stream);
      test::check_within(gx.download(), r.grad_x, test::relative_bound(r.grad_x, 1e-5),
                         "channel_scale grad_x f32 " + l.str());
      test::check_within(gs.download(), r.grad_scale, scaled(r.abs_terms, 1e-5),
                         "channel_scale grad_scale f32 " + l.str());
      // Each gradient alone (the other pointer null) gives the same values.
      gx.poison();
      gs.poison();
      cuda::channel_scale_backward(dx.data(), ds.data(), dg.data(), nullptr, gs.data(), l, stream);
      test::check_within(gs.download(), r.grad_scale, scaled(r.abs_terms, 1e-5),
                         "channel_scale grad_scale only " + l.str());
      for (float v : gx.download()) REQUIRE(std::isnan(v));  // untouched
      cuda::channel_scale_backward(dx.data(), ds.data(), dg.data(), gx.data(), nullptr, l, stream);
      test::check_within(gx.download(), r.grad_x, test::relative_bound(r.grad_x, 1e-5),
                         "channel_scale grad_x only " + l.str());
    }
  }
}

TEST_CASE("cuda squeeze-excite: f16 channel scale forward and backward, both formats") {
  test::skip_unless_cuda_device();
  const cuda::Stream stream = cuda::compute_stream(0);
  for (ActivationLayout l : kShapes) {
    for (MemoryFormat format : {MemoryFormat::contiguous, MemoryFormat::channels_last}) {
      l.format = format;
      CAPTURE(l.str());
      const size_t rows = static_cast<size_t>(l.batch * l.channels);
      const std::vector<float> x =
          test::round_to_half(test::random_normal(static_cast<size_t>(l.numel()), 61));
      const std::vector<float> g =
          test::round_to_half(test::random_normal(static_cast<size_t>(l.numel()), 62));
      const std::vector<float> s = test::round_to_half(test::random_normal(rows, 63, 0.3, 0.5));
      const Reference r = reference(l, x, s, g);
      DeviceBuffer<Half> dx(test::to_half(x)), ds(test::to_half(s)), dg(test::to_half(g)),
          out(l.numel()), gx(l.numel()), gs(static_cast<int64_t>(rows));
      out.poison();
      gx.poison();
      gs.poison();
      cuda::channel_scale_forward(dx.data(), ds.data(), out.data(), l, stream);
      test::check_within(test::to_float(out.download()), r.out,
                         test::half_output_bound(r.out, test::relative_bound(r.out, 1e-6, 0.0)),
                         "channel_scale forward f16 " + l.str());
      cuda::channel_scale_backward(dx.data(), ds.data(), dg.data(), gx.data(), gs.data(), l,
                                   stream);
      test::check_within(
          test::to_float(gx.download()), r.grad_x,
          test::half_output_bound(r.grad_x, test::relative_bound(r.grad_x, 1e-6, 0.0)),
          "channel_scale grad_x f16 " + l.str());
      test::check_within(test::to_float(gs.download()), r.grad_scale,
                         test::half_output_bound(r.grad_scale, scaled(r.abs_terms, 1e-5)),
                         "channel_scale grad_scale f16 " + l.str());
    }
  }
}

TEST_CASE("cuda squeeze-excite: bad arguments throw before touching the device") {
  test::skip_unless_cuda_build();
  const cuda::Stream stream{};
  const float* none = nullptr;
  float* out = nullptr;
  const ActivationLayout l{2, 3, 4, 4};
  CHECK_THROWS_WITH_AS(cuda::channel_scale_forward(none, none, out, l, stream),
                       doctest::Contains("cuda::channel_scale_forward: x is null"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(cuda::channel_scale_backward(none, none, none, out, nullptr, l, stream),
                       doctest::Contains("grad_out is null"), std::invalid_argument);
}
