// CPU loops of the channel scale (see squeeze_excite_cpu.h). NHWC rows are
// whole pixels: each pixel's C values times the image's C scales, vectorized
// over channels; NCHW walks the (outer, C, inner) view.
#include "layers/squeeze_excite_cpu.h"

#include <vector>

namespace b3::cpu {

namespace {

// out = in * s broadcast over (h, w): the forward (in = x) and grad_x (in = g).
template <typename T>
void scale_by_channel(const T* in, const T* s, T* out, const ActivationLayout& layout) {
  const int64_t c = layout.channels, outer = layout.outer(), inner = layout.inner();
  const int64_t blocks = layout.outer_per_image();
  if (inner == 1) {  // NHWC: each pixel's C values times the image's C scales
#pragma omp parallel for schedule(static) if (layout.numel() > (1 << 16))
    for (int64_t o = 0; o < outer; ++o) {
      const T* s_image = s + (o / blocks) * c;
      const T* row_in = in + o * c;
      T* row_out = out + o * c;
#pragma omp simd
      for (int64_t ch = 0; ch < c; ++ch) row_out[ch] = row_in[ch] * s_image[ch];
    }
    return;
  }
#pragma omp parallel for if (layout.numel() > (1 << 16))
  for (int64_t o = 0; o < outer; ++o) {
    const T* s_image = s + (o / blocks) * c;
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t i = 0; i < inner; ++i)
        out[layout.index(o, ch, i)] = in[layout.index(o, ch, i)] * s_image[ch];
  }
}

// grad_s[n, c] = sum over (h, w) of g * x; g and x share one layout.
template <typename T>
void scale_gradient(const T* g, const T* x, T* grad_s, const ActivationLayout& layout) {
  const int64_t n = layout.batch, c = layout.channels, inner = layout.inner();
  const int64_t blocks = layout.outer_per_image();
#pragma omp parallel for if (layout.numel() > (1 << 16))
  for (int64_t image = 0; image < n; ++image) {
    std::vector<double> totals(static_cast<size_t>(c), 0.0);
    double* tp = totals.data();
    if (inner == 1) {  // NHWC: whole pixel rows, vectorized over channels
      for (int64_t o = image * blocks; o < (image + 1) * blocks; ++o) {
        const T* g_row = g + o * c;
        const T* x_row = x + o * c;
#pragma omp simd
        for (int64_t ch = 0; ch < c; ++ch)
          tp[ch] += static_cast<double>(g_row[ch]) * static_cast<double>(x_row[ch]);
      }
    } else {
      for (int64_t o = image * blocks; o < (image + 1) * blocks; ++o)
        for (int64_t ch = 0; ch < c; ++ch)
          for (int64_t i = 0; i < inner; ++i) {
            const int64_t k = layout.index(o, ch, i);
            tp[ch] += static_cast<double>(g[k]) * static_cast<double>(x[k]);
          }
    }
    for (int64_t ch = 0; ch < c; ++ch) grad_s[image * c + ch] = static_cast<T>(tp[ch]);
  }
}

// Both gradients in one pass over g (NHWC): grad_x = g * s and grad_s[n, c] =
// sum over (h, w) of g * x, the sums in double as in scale_gradient.
template <typename T>
void scale_backward_nhwc(const T* g, const T* x, const T* s, T* grad_x, T* grad_s,
                         const ActivationLayout& layout) {
  const int64_t n = layout.batch, c = layout.channels, blocks = layout.outer_per_image();
#pragma omp parallel for if (layout.numel() > (1 << 16))
  for (int64_t image = 0; image < n; ++image) {
    std::vector<double> totals(static_cast<size_t>(c), 0.0);
    double* tp = totals.data();
    const T* s_image = s + image * c;
    for (int64_t o = image * blocks; o < (image + 1) * blocks; ++o) {
      const T* g_row = g + o * c;
      const T* x_row = x + o * c;
      T* out_row = grad_x + o * c;
#pragma omp simd
      for (int64_t ch = 0; ch < c; ++ch) {
        out_row[ch] = g_row[ch] * s_image[ch];
        tp[ch] += static_cast<double>(g_row[ch]) * static_cast<double>(x_row[ch]);
      }
    }
    for (int64_t ch = 0; ch < c; ++ch) grad_s[image * c + ch] = static_cast<T>(tp[ch]);
  }
}

}  // namespace

template <typename T>
void channel_scale_forward(const T* x, const T* scale, T* out, const ActivationLayout& layout) {
  scale_by_channel(x, scale, out, layout);
}

template <typename T>
void channel_scale_backward(const T* x, const T* scale, const T* grad_out, T* grad_x, T* grad_scale,
                            const ActivationLayout& layout) {
  if (grad_x != nullptr && grad_scale != nullptr && layout.inner() == 1) {
    scale_backward_nhwc(grad_out, x, scale, grad_x, grad_scale, layout);
    return;
  }
  if (grad_x != nullptr) scale_by_channel(grad_out, scale, grad_x, layout);
  if (grad_scale != nullptr) scale_gradient(grad_out, x, grad_scale, layout);
}

template void channel_scale_forward<float>(const float*, const float*, float*,
                                           const ActivationLayout&);
template void channel_scale_forward<double>(const double*, const double*, double*,
                                            const ActivationLayout&);
template void channel_scale_backward<float>(const float*, const float*, const float*, float*,
                                            float*, const ActivationLayout&);
template void channel_scale_backward<double>(const double*, const double*, const double*, double*,
                                             double*, const ActivationLayout&);

}  // namespace b3::cpu
