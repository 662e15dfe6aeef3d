// CPU kernels of batch normalization (see batchnorm2d_cpu.h for the layout).
//
// Reductions: NCHW (inner > 1) gives each thread whole channels; NHWC
// (inner == 1) cuts the rows into fixed blocks of kRowsPerBlock, sums each
// block into its own partial row of C values (threads never share one), then
// adds the blocks in order. Elementwise kernels run over (block, channel)
// planes (NCHW) or rows (NHWC), the innermost loop contiguous in memory.
#include "layers/batchnorm2d_cpu.h"

#include <algorithm>
#include <array>
#include <vector>

namespace b3::cpu {

namespace {

constexpr int64_t kRowsPerBlock = 256;
constexpr int64_t kParallelThreshold = int64_t{1} << 15;  // elements worth a thread team

// sums[k * C + c] = sum over channel c's elements e of term(e, c)[k], for k < K.
template <int K, typename Term>
void sum_per_channel(const BatchNormLayout& layout, const Term& term, double* sums) {
  const int64_t channels = layout.channels;
  const int64_t inner = layout.inner;
  const bool parallel = layout.per_channel() * channels > kParallelThreshold;
  if (inner > 1) {
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t c = 0; c < channels; ++c) {
      std::array<double, K> total{};
      for (int64_t o = 0; o < layout.outer; ++o) {
        const int64_t base = (o * channels + c) * inner;
        for (int64_t i = 0; i < inner; ++i) {
          const std::array<double, K> t = term(base + i, c);
          for (int k = 0; k < K; ++k) total[k] += t[k];
        }
      }
      for (int k = 0; k < K; ++k) sums[k * channels + c] = total[k];
    }
    return;
  }
  const int64_t rows = layout.outer;
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  std::vector<double> partial(static_cast<size_t>(blocks * K * channels), 0.0);
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t b = 0; b < blocks; ++b) {
    double* block_sums = partial.data() + b * K * channels;
    const int64_t end = std::min(rows, (b + 1) * kRowsPerBlock);
    for (int64_t r = b * kRowsPerBlock; r < end; ++r) {
      for (int64_t c = 0; c < channels; ++c) {
        const std::array<double, K> t = term(r * channels + c, c);
        for (int k = 0; k < K; ++k) block_sums[k * channels + c] += t[k];
      }
    }
  }
  for (int64_t j = 0; j < K * channels; ++j) {
    double total = 0.0;
    for (int64_t b = 0; b < blocks; ++b)
      total += partial[static_cast<size_t>(b * K * channels + j)];
    sums[j] = total;
  }
}

template <typename T>
std::vector<T> to_type(const double* values, int64_t n) {
  return std::vector<T>(values, values + n);
}

}  // namespace

template <typename T>
void batch_norm_statistics(const T* x, const BatchNormLayout& layout, double* mean, double* var) {
  const int64_t channels = layout.channels;
  const double count = static_cast<double>(layout.per_channel());
  sum_per_channel<1>(
      layout, [x](int64_t e, int64_t) { return std::array<double, 1>{double(x[e])}; }, mean);
  for (int64_t c = 0; c < channels; ++c) mean[c] /= count;
  // Second pass on centered values: no cancellation, unlike E[x^2] - E[x]^2.
  sum_per_channel<1>(
      layout,
      [x, mean](int64_t e, int64_t c) {
        const double d = double(x[e]) - mean[c];
        return std::array<double, 1>{d * d};
      },
      var);
  for (int64_t c = 0; c < channels; ++c) var[c] /= count;
}

template <typename T>
void batch_norm_scale_shift(const T* x, T* y, const BatchNormLayout& layout, const double* scale,
                            const double* shift) {
  const int64_t channels = layout.channels;
  const int64_t inner = layout.inner;
  const std::vector<T> s = to_type<T>(scale, channels);
  const std::vector<T> b = to_type<T>(shift, channels);
  const bool parallel = layout.per_channel() * channels > kParallelThreshold;
  if (inner > 1) {
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
    for (int64_t o = 0; o < layout.outer; ++o) {
      for (int64_t c = 0; c < channels; ++c) {
        const int64_t base = (o * channels + c) * inner;
        const T sc = s[c];
        const T sh = b[c];
#pragma omp simd
        for (int64_t i = 0; i < inner; ++i) y[base + i] = x[base + i] * sc + sh;
      }
    }
    return;
  }
  const T* sp = s.data();
  const T* bp = b.data();
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < layout.outer; ++r) {
    const T* xr = x + r * channels;
    T* yr = y + r * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) yr[c] = xr[c] * sp[c] + bp[c];
  }
}

template <typename T>
void batch_norm_gradient_sums(const T* g, const T* x, const BatchNormLayout& layout,
                              const double* mean, double* sum_g, double* sum_g_centered) {
  const int64_t channels = layout.channels;
  std::vector<double> sums(static_cast<size_t>(2 * channels));
  sum_per_channel<2>(
      layout,
      [g, x, mean](int64_t e, int64_t c) {
        const double ge = double(g[e]);
        return std::array<double, 2>{ge, ge * (double(x[e]) - mean[c])};
      },
      sums.data());
  std::copy(sums.begin(), sums.begin() + channels, sum_g);
  std::copy(sums.begin() + channels, sums.end(), sum_g_centered);
}

template <typename T>
void batch_norm_input_gradient(const T* g, const T* x, T* gx, const BatchNormLayout& layout,
                               const double* mean, const double* mean_g, const double* projection,
                               const double* gain) {
  const int64_t channels = layout.channels;
  const int64_t inner = layout.inner;
  const std::vector<T> m = to_type<T>(mean, channels);
  const std::vector<T> mg = to_type<T>(mean_g, channels);
  const std::vector<T> pr = to_type<T>(projection, channels);
  const std::vector<T> k = to_type<T>(gain, channels);
  const bool parallel = layout.per_channel() * channels > kParallelThreshold;
  if (inner > 1) {
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
    for (int64_t o = 0; o < layout.outer; ++o) {
      for (int64_t c = 0; c < channels; ++c) {
        const int64_t base = (o * channels + c) * inner;
        const T mc = m[c], mgc = mg[c], prc = pr[c], kc = k[c];
#pragma omp simd
        for (int64_t i = 0; i < inner; ++i) {
          gx[base + i] = kc * (g[base + i] - mgc - (x[base + i] - mc) * prc);
        }
      }
    }
    return;
  }
  const T* mp = m.data();
  const T* mgp = mg.data();
  const T* prp = pr.data();
  const T* kp = k.data();
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < layout.outer; ++r) {
    const T* gr = g + r * channels;
    const T* xr = x + r * channels;
    T* out = gx + r * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      out[c] = kp[c] * (gr[c] - mgp[c] - (xr[c] - mp[c]) * prp[c]);
    }
  }
}

#define B3_INSTANTIATE_BATCH_NORM(T)                                                           \
  template void batch_norm_statistics<T>(const T*, const BatchNormLayout&, double*, double*);  \
  template void batch_norm_scale_shift<T>(const T*, T*, const BatchNormLayout&, const double*, \
                                          const double*);                                      \
  template void batch_norm_gradient_sums<T>(const T*, const T*, const BatchNormLayout&,        \
                                            const double*, double*, double*);                  \
  template void batch_norm_input_gradient<T>(const T*, const T*, T*, const BatchNormLayout&,   \
                                             const double*, const double*, const double*,      \
                                             const double*);

B3_INSTANTIATE_BATCH_NORM(float)
B3_INSTANTIATE_BATCH_NORM(double)

#undef B3_INSTANTIATE_BATCH_NORM

}  // namespace b3::cpu
