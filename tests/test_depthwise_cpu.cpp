// Depthwise convolution's register tiles (layers/conv2d_cpu.cpp): rows wide
// enough for the 8- and 4-output tiles, channel counts with whole vectors,
// a half vector and leftovers, 3x3 and 5x5 kernels, strides 1 and 2, the
// paddings of MobileNetV3 and others, forward and both gradients in f32 and
// f64, outputs large enough for streaming stores, against a naive double
// reference written here.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "layers/conv2d.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

struct DwCase {
  int64_t batch, channels, height, width, kernel, stride, padding;
};

// The index of (n, c, y, x) in a logical NCHW vector.
int64_t at(int64_t n, int64_t c, int64_t y, int64_t x, int64_t C, int64_t H, int64_t W) {
  return ((n * C + c) * H + y) * W + x;
}

struct Reference {
  std::vector<double> out, grad_input, grad_weight, grad_bias;
};

// out = depthwise conv(in, w) + b; the three gradients for dL/dout = g.
Reference reference(const DwCase& c, const std::vector<double>& in, const std::vector<double>& w,
                    const std::vector<double>& b, const std::vector<double>& g, int64_t ho,
                    int64_t wo) {
  const int64_t C = c.channels, H = c.height, W = c.width, k = c.kernel;
  Reference r;
  r.out.assign(static_cast<size_t>(c.batch * C * ho * wo), 0.0);
  r.grad_input.assign(in.size(), 0.0);
  r.grad_weight.assign(w.size(), 0.0);
  r.grad_bias.assign(b.size(), 0.0);
  for (int64_t n = 0; n < c.batch; ++n)
    for (int64_t ch = 0; ch < C; ++ch)
      for (int64_t y = 0; y < ho; ++y)
        for (int64_t x = 0; x < wo; ++x) {
          const size_t o = static_cast<size_t>(at(n, ch, y, x, C, ho, wo));
          double sum = b[static_cast<size_t>(ch)];
          r.grad_bias[static_cast<size_t>(ch)] += g[o];
          for (int64_t ky = 0; ky < k; ++ky)
            for (int64_t kx = 0; kx < k; ++kx) {
              const int64_t iy = y * c.stride + ky - c.padding;
              const int64_t ix = x * c.stride + kx - c.padding;
              if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
              const size_t i = static_cast<size_t>(at(n, ch, iy, ix, C, H, W));
              const size_t wi = static_cast<size_t>((ch * k + ky) * k + kx);
              sum += w[wi] * in[i];
              r.grad_input[i] += w[wi] * g[o];
              r.grad_weight[wi] += in[i] * g[o];
            }
          r.out[o] = sum;
        }
  return r;
}

}  // namespace

TEST_CASE("depthwise conv2d: register tiles match the naive reference, f32 and f64") {
  test::use_openmp_threads(2);
  Generator gen(31);
  const DwCase cases[] = {
      {2, 16, 9, 21, 3, 1, 1},     // one 16-float vector, 3x3 s1: two 8-tiles and borders
      {2, 24, 12, 27, 3, 2, 1},    // vector + half vector, 3x3 s2 (4-output tiles)
      {1, 72, 10, 30, 5, 1, 2},    // 4.5 vectors, 5x5 s1
      {2, 29, 11, 33, 5, 2, 2},    // 29 = 16 + 8 + 5 leftover channels, 5x5 s2
      {1, 40, 8, 19, 3, 1, 0},     // no padding: the interior is the whole row
      {1, 16, 6, 17, 3, 1, 2},     // padding wider than half the kernel
      {1, 8, 5, 12, 5, 2, 1},      // only a half vector; 5x5 s2 with padding 1
      {2, 32, 7, 7, 3, 1, 1},      // rows narrower than two tiles
      {2, 32, 182, 180, 3, 1, 1},  // 8.4 MB out and grad_in: the streaming stores
      {1, 64, 260, 260, 3, 2, 1},  // 17 MB grad_in at stride 2 (streamed), 4 MB out
  };
  for (const DwCase& c : cases) {
    for (DType dtype : {DType::f32, DType::f64}) {
      CAPTURE(c.channels);
      CAPTURE(c.width);
      CAPTURE(c.kernel);
      CAPTURE(c.stride);
      CAPTURE(c.padding);
      CAPTURE(dtype_name(dtype));
      Tensor input = test::random_tensor({c.batch, c.channels, c.height, c.width}, gen, dtype,
                                         MemoryFormat::channels_last);
      Tensor weight = test::random_tensor({c.channels, 1, c.kernel, c.kernel}, gen, dtype);
      Tensor bias = test::random_tensor({c.channels}, gen, dtype);
      for (Tensor* t : {&input, &weight, &bias}) t->set_requires_grad(true);
      const Tensor y = conv2d(input, weight, bias, c.stride, c.padding, c.channels);
      const int64_t ho = y.size(2), wo = y.size(3);
      const Tensor g = test::random_tensor(y.shape(), gen, dtype, MemoryFormat::channels_last);
      y.backward(g);
      const Reference r = reference(c, input.to_doubles(), weight.to_doubles(), bias.to_doubles(),
                                    g.to_doubles(), ho, wo);
      // f32: sums of at most 25 (forward, input gradient) or 2 * 33 * 12 = 792
      // (weight, bias gradient) products of N(0, 1) values; relative to
      // max(|ref|, 1), rounding stays below ~sqrt(L) * 6e-8 * L^0.5 ~ L * 6e-8:
      // 1.5e-6 and 5e-5. f64: the same bounds with 1.1e-16 (1e-12 is ample).
      const bool f32 = dtype == DType::f32;
      CHECK(test::max_relative_error(y, r.out) < (f32 ? 2e-6 : 1e-12));
      CHECK(test::max_relative_error(input.grad(), r.grad_input) < (f32 ? 2e-6 : 1e-12));
      // The two large cases are there for the streamed outputs above; their
      // weight and bias gradients are f32 sums of 65,000 products, beyond the
      // 792-term bound, and the small cases check those kernels.
      if (c.batch * ho * wo > 2 * 33 * 12) continue;
      CHECK(test::max_relative_error(weight.grad(), r.grad_weight) < (f32 ? 5e-5 : 1e-12));
      CHECK(test::max_relative_error(bias.grad(), r.grad_bias) < (f32 ? 5e-5 : 1e-12));
    }
  }
}
