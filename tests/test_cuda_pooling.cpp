// Global average pooling on CUDA (layers/pooling_cuda.h), forward and
// backward, f32 and f16, NCHW and NHWC, against a double reference on the
// same input values. Outputs are poisoned with NaN before each launch.
//
// Tolerances. Forward: each mean is a sum of H*W values in f32 in chunks
// (NCHW: 32 lanes each summing H*W/32 values, then a 5-step tree; NHWC: 8
// rows each summing H*W/8, then 8 in order), then one division; the error is
// below (H*W/8 + 8 + 1) * 2^-24 * mean(|x|) <= 4e-6 * mean(|x|) for the
// largest plane here (14x14), so 1e-5 * max(|mean|, mean |x|) holds. f16 adds
// one rounding of the result (test::half_output_bound). Backward: one
// division per element, 1e-5 relative (f32), plus the f16 rounding.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "layers/pooling_cuda.h"
#include "tests/support/cuda.h"

using namespace b3;
using test::DeviceBuffer;
using test::index_of;

namespace {

const ActivationLayout kShapes[] = {
    {1, 3, 7, 7}, {3, 5, 1, 1}, {2, 13, 5, 3}, {4, 40, 14, 14}, {127, 8, 7, 7}, {2, 1, 1, 9},
};

struct Reference {
  std::vector<double> mean;      // [N*C]
  std::vector<double> mean_abs;  // [N*C]: mean of |x|, the scale of the rounding error
  std::vector<double> grad_x;    // in the layout
};

Reference reference(const ActivationLayout& l, const std::vector<float>& x,
                    const std::vector<float>& gy) {
  Reference r;
  r.mean.assign(static_cast<size_t>(l.batch * l.channels), 0.0);
  r.mean_abs = r.mean;
  r.grad_x.assign(x.size(), 0.0);
  const double plane = static_cast<double>(l.spatial());
  for (int64_t n = 0; n < l.batch; ++n) {
    for (int64_t c = 0; c < l.channels; ++c) {
      const size_t row = static_cast<size_t>(n * l.channels + c);
      for (int64_t h = 0; h < l.height; ++h) {
        for (int64_t w = 0; w < l.width; ++w) {
          const size_t i = index_of(l, n, c, h, w);
          r.mean[row] += x[i];
          r.mean_abs[row] += std::abs(x[i]);
          r.grad_x[i] = gy[row] / plane;
        }
      }
      r.mean[row] /= plane;
      r.mean_abs[row] /= plane;
    }
  }
  return r;
}

std::vector<double> forward_bound(const Reference& r) {
  std::vector<double> bound(r.mean.size());
  for (size_t i = 0; i < bound.size(); ++i) {
    bound[i] = 1e-5 * std::max(std::abs(r.mean[i]), r.mean_abs[i]);
  }
  return bound;
}

std::string name(const ActivationLayout& l, const char* what) {
  return std::string(what) + " " + l.str();
}

}  // namespace

TEST_CASE("cuda pooling: f32 global average pool, both formats") {
  test::skip_unless_cuda_device();
  const cuda::Stream stream = cuda::compute_stream(0);
  for (ActivationLayout l : kShapes) {
    for (MemoryFormat format : {MemoryFormat::contiguous, MemoryFormat::channels_last}) {
      l.format = format;
      CAPTURE(l.str());
      const std::vector<float> x =
          test::random_normal(static_cast<size_t>(l.numel()), 31, 2.0, 0.5);
      const std::vector<float> gy =
          test::random_normal(static_cast<size_t>(l.batch * l.channels), 32);
      const Reference r = reference(l, x, gy);
      DeviceBuffer<float> dx(x), dgy(gy), y(l.batch * l.channels), gx(l.numel());
      y.poison();
      gx.poison();
      cuda::global_avg_pool_forward(dx.data(), y.data(), l, stream);
      test::check_within(y.download(), r.mean, forward_bound(r), name(l, "pool forward f32"));
      cuda::global_avg_pool_backward(dgy.data(), gx.data(), l, stream);
      test::check_within(gx.download(), r.grad_x, test::relative_bound(r.grad_x, 1e-5),
                         name(l, "pool backward f32"));
    }
  }
}

TEST_CASE("cuda pooling: f16 global average pool, both formats") {
  test::skip_unless_cuda_device();
  const cuda::Stream stream = cuda::compute_stream(0);
  for (ActivationLayout l : kShapes) {
    for (MemoryFormat format : {MemoryFormat::contiguous, MemoryFormat::channels_last}) {
      l.format = format;
      CAPTURE(l.str());
      const std::vector<float> x =
          test::round_to_half(test::random_normal(static_cast<size_t>(l.numel()), 41, 2.0, 0.5));
      const std::vector<float> gy =
          test::round_to_half(test::random_normal(static_cast<size_t>(l.batch * l.channels), 42));
      const Reference r = reference(l, x, gy);
      DeviceBuffer<Half> dx(test::to_half(x)), dgy(test::to_half(gy)), y(l.batch * l.channels),
          gx(l.numel());
      y.poison();
      gx.poison();
      cuda::global_avg_pool_forward(dx.data(), y.data(), l, stream);
      test::check_within(test::to_float(y.download()), r.mean,
                         test::half_output_bound(r.mean, forward_bound(r)),
                         name(l, "pool forward f16"));
      cuda::global_avg_pool_backward(dgy.data(), gx.data(), l, stream);
      test::check_within(
          test::to_float(gx.download()), r.grad_x,
          test::half_output_bound(r.grad_x, test::relative_bound(r.grad_x, 1e-6, 0.0)),
          name(l, "pool backward f16"));
    }
  }
}

TEST_CASE("cuda pooling: bad arguments throw before touching the device") {
  test::skip_unless_cuda_build();
  const cuda::Stream stream{};
  const float* none = nullptr;
  float* out = nullptr;
  ActivationLayout empty_plane{2, 3, 0, 4};
  CHECK_THROWS_WITH_AS(cuda::global_avg_pool_forward(none, out, empty_plane, stream),
                       doctest::Contains("empty 0x4 plane"), std::invalid_argument);
  ActivationLayout negative{2, -3, 4, 4};
  CHECK_THROWS_WITH_AS(cuda::global_avg_pool_backward(none, out, negative, stream),
                       doctest::Contains("negative size"), std::invalid_argument);
  ActivationLayout fine{2, 3, 4, 4};
  CHECK_THROWS_WITH_AS(cuda::global_avg_pool_forward(none, out, fine, stream),
                       doctest::Contains("x is null"), std::invalid_argument);
  ActivationLayout no_batch{0, 3, 4, 4};
  CHECK_NOTHROW(cuda::global_avg_pool_forward(none, out, no_batch, stream));
}
