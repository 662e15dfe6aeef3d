// CPU loops of global average pooling (see pooling_cpu.h): each image's
// channel sums in double over its H*W values (NHWC: whole pixel rows,
// vectorized over channels), and the backward's broadcast of g / (H*W).
#include "layers/pooling_cpu.h"

#include <vector>

namespace b3::cpu {

template <typename T>
void global_avg_pool_forward(const T* x, T* y, const ActivationLayout& layout) {
  const int64_t n = layout.batch, c = layout.channels, hw = layout.spatial();
  const int64_t blocks = layout.outer_per_image(), inner = layout.inner();
#pragma omp parallel for if (n * c * hw > (1 << 16))
  for (int64_t image = 0; image < n; ++image) {
    std::vector<double> totals(static_cast<size_t>(c), 0.0);
    double* tp = totals.data();
    if (inner == 1) {  // NHWC: whole pixel rows, vectorized over channels
      for (int64_t o = image * blocks; o < (image + 1) * blocks; ++o) {
        const T* row = x + o * c;
#pragma omp simd
        for (int64_t ch = 0; ch < c; ++ch) tp[ch] += static_cast<double>(row[ch]);
      }
    } else {
      for (int64_t o = image * blocks; o < (image + 1) * blocks; ++o)
        for (int64_t ch = 0; ch < c; ++ch)
          for (int64_t i = 0; i < inner; ++i)
            tp[ch] += static_cast<double>(x[layout.index(o, ch, i)]);
    }
    for (int64_t ch = 0; ch < c; ++ch)
      y[image * c + ch] = static_cast<T>(totals[static_cast<size_t>(ch)] / static_cast<double>(hw));
  }
}

template <typename T>
void global_avg_pool_backward(const T* grad_y, T* grad_x, const ActivationLayout& layout) {
  const int64_t c = layout.channels, outer = layout.outer(), inner = layout.inner();
  const int64_t blocks = layout.outer_per_image();
  const T inv_area = T(1) / static_cast<T>(layout.spatial());
  if (inner == 1) {  // NHWC: every pixel row of an image is g[n, :] / (H*W)
#pragma omp parallel for schedule(static) if (outer * c > (1 << 16))
    for (int64_t o = 0; o < outer; ++o) {
      const T* g_image = grad_y + (o / blocks) * c;
      T* row = grad_x + o * c;
#pragma omp simd
      for (int64_t ch = 0; ch < c; ++ch) row[ch] = g_image[ch] * inv_area;
    }
    return;
  }
#pragma omp parallel for if (outer * c * inner > (1 << 16))
  for (int64_t o = 0; o < outer; ++o) {
    const int64_t image = o / blocks;
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t i = 0; i < inner; ++i)
        grad_x[layout.index(o, ch, i)] = grad_y[image * c + ch] * inv_area;
  }
}

template void global_avg_pool_forward<float>(const float*, float*, const ActivationLayout&);
template void global_avg_pool_forward<double>(const double*, double*, const ActivationLayout&);
template void global_avg_pool_backward<float>(const float*, float*, const ActivationLayout&);
template void global_avg_pool_backward<double>(const double*, double*, const ActivationLayout&);

}  // namespace b3::cpu
