// CPU kernels of batch normalization (see batchnorm2d_cpu.h for the layout).
//
// Reductions: NCHW (inner > 1) gives each thread whole channels; NHWC
// (inner == 1) cuts the rows into fixed blocks (rows_per_reduction_block),
// sums each block into its own partial row of C values (threads never share
// one), then adds the blocks in order. Elementwise kernels run over (block, channel)
// planes (NCHW) or rows (NHWC), the innermost loop contiguous in memory.
#include "layers/batchnorm2d_cpu.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "layers/elementwise_cpu.h"

namespace b3::cpu {

namespace {

constexpr int64_t kParallelThreshold = int64_t{1} << 15;  // elements worth a thread team

// NHWC reductions sum blocks of rows: 256 rows, fewer for wide rows, so that
// a block (read once per channel block) stays in the L2 cache.
int64_t rows_per_reduction_block(int64_t channels) {
  return std::clamp<int64_t>((int64_t{1} << 15) / std::max<int64_t>(channels, 1), 16, 256);
}

// NHWC reductions work on eight channels at a time in double (GCC/Clang
// vector extensions: one AVX-512 register, or two AVX2 ones), sixteen
// channels (four independent accumulators) where they fit.
typedef double Double8 __attribute__((vector_size(64)));
typedef float Float8 __attribute__((vector_size(32)));

inline Double8 load_double8(const float* p) {
  Float8 f;
  std::memcpy(&f, p, sizeof f);
  return __builtin_convertvector(f, Double8);
}
inline Double8 load_double8(const double* p) {
  Double8 d;
  std::memcpy(&d, p, sizeof d);
  return d;
}
inline void store_double8(double* p, Double8 v) { std::memcpy(p, &v, sizeof v); }

// Sums over rows [first, end) of an NHWC block of the pair of terms
// term(value of a, value of b, channel constant) for every channel, into
// out[c] (first term) and out[C + c] (second). `pair(a, b, k)` returns the
// two terms for one element and works on Double8 and double alike.
template <typename T, typename Pair>
void sum_rows_by_channel(const T* a, const T* b, const double* constant, int64_t channels,
                         int64_t first, int64_t end, double* out, const Pair& pair) {
  int64_t c0 = 0;
  for (; c0 + 16 <= channels; c0 += 16) {
    const Double8 k0 = load_double8(constant + c0), k1 = load_double8(constant + c0 + 8);
    Double8 u0{}, u1{}, v0{}, v1{};
    for (int64_t r = first; r < end; ++r) {
      const T* ar = a + r * channels + c0;
      const T* br = b + r * channels + c0;
      const auto [p0, q0] = pair(load_double8(ar), load_double8(br), k0);
      const auto [p1, q1] = pair(load_double8(ar + 8), load_double8(br + 8), k1);
      u0 += p0;
      u1 += p1;
      v0 += q0;
      v1 += q1;
    }
    store_double8(out + c0, u0);
    store_double8(out + c0 + 8, u1);
    store_double8(out + channels + c0, v0);
    store_double8(out + channels + c0 + 8, v1);
  }
  for (; c0 + 8 <= channels; c0 += 8) {
    const Double8 k0 = load_double8(constant + c0);
    Double8 u0{}, v0{};
    for (int64_t r = first; r < end; ++r) {
      const auto [p0, q0] =
          pair(load_double8(a + r * channels + c0), load_double8(b + r * channels + c0), k0);
      u0 += p0;
      v0 += q0;
    }
    store_double8(out + c0, u0);
    store_double8(out + channels + c0, v0);
  }
  for (; c0 < channels; ++c0) {
    double u = 0.0, v = 0.0;
    for (int64_t r = first; r < end; ++r) {
      const auto [p, q] =
          pair(double(a[r * channels + c0]), double(b[r * channels + c0]), constant[c0]);
      u += p;
      v += q;
    }
    out[c0] = u;
    out[channels + c0] = v;
  }
}

// Per-channel sums of K terms: sums[k * C + c] = sum over channel c's elements e
// of the k-th term. `accumulate(begin, end, c_stride, sums)` adds the terms of
// the elements of one stretch into `sums` (K arrays of C doubles, or of one
// double for NCHW, see below); it holds the vectorized inner loop.
//   NCHW (inner > 1): each (outer, channel) plane is a contiguous run of
//     `inner` elements; a thread takes whole channels, summing the planes in
//     order.
//   NHWC (inner == 1): rows of C values; the rows are cut into fixed blocks of
//     rows_per_reduction_block(C) rows, each block summed into its own partial row of K * C
//     doubles (threads never share one), and the blocks added in order.
// Either way the order of additions depends only on the shape, not on the
// number of threads: results are reproducible.
template <int K, typename PlaneSum, typename RowSum>
void sum_per_channel(const BatchNormLayout& layout, const PlaneSum& plane_sum,
                     const RowSum& row_sum, double* sums) {
  const int64_t channels = layout.channels;
  const int64_t inner = layout.inner;
  const bool parallel = layout.per_channel() * channels > kParallelThreshold;
  if (inner > 1) {
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t c = 0; c < channels; ++c) {
      std::array<double, K> total{};
      for (int64_t o = 0; o < layout.outer; ++o) plane_sum((o * channels + c) * inner, c, total);
      for (int k = 0; k < K; ++k) sums[k * channels + c] = total[k];
    }
    return;
  }
  const int64_t rows = layout.outer;
  const int64_t rows_per_block = rows_per_reduction_block(channels);
  const int64_t blocks = (rows + rows_per_block - 1) / rows_per_block;
  std::vector<double> partial(static_cast<size_t>(blocks * K * channels), 0.0);
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t b = 0; b < blocks; ++b) {
    row_sum(b * rows_per_block, std::min(rows, (b + 1) * rows_per_block),
            partial.data() + b * K * channels);
  }
  for (int64_t j = 0; j < K * channels; ++j) sums[j] = 0.0;
  for (int64_t b = 0; b < blocks; ++b) {
    const double* block_sums = partial.data() + b * K * channels;
#pragma omp simd
    for (int64_t j = 0; j < K * channels; ++j) sums[j] += block_sums[j];
  }
}

template <typename T>
std::vector<T> to_type(const double* values, int64_t n) {
  return std::vector<T>(values, values + n);
}

}  // namespace

// One pass over x: per channel, the sums S1 = sum(d) and S2 = sum(d^2) of
// d = x - shift[c], with shift[c] one of the channel's own values (its first).
// Then mean = shift + S1 / M and var = (S2 - S1^2 / M) / M. Shifting by a value
// of the data keeps S1 / M of the order of the standard deviation, so the
// subtraction does not cancel (the "shifted data" algorithm), and the sums
// are in double; it reads x once instead of twice.
template <typename T>
void batch_norm_statistics(const T* x, const BatchNormLayout& layout, double* mean, double* var) {
  const int64_t channels = layout.channels;
  const int64_t inner = layout.inner;
  const double count = static_cast<double>(layout.per_channel());
  std::vector<double> shift(static_cast<size_t>(channels));
  for (int64_t c = 0; c < channels; ++c) shift[static_cast<size_t>(c)] = double(x[c * inner]);
  const double* sh = shift.data();
  std::vector<double> sums(static_cast<size_t>(2 * channels));
  sum_per_channel<2>(
      layout,
      [x, sh, inner](int64_t begin, int64_t c, std::array<double, 2>& total) {
        double s1 = 0.0, s2 = 0.0;
        const double shift_c = sh[c];
#pragma omp simd reduction(+ : s1, s2)
        for (int64_t i = 0; i < inner; ++i) {
          const double d = double(x[begin + i]) - shift_c;
          s1 += d;
          s2 += d * d;
        }
        total[0] += s1;
        total[1] += s2;
      },
      [x, sh, channels](int64_t first_row, int64_t end_row, double* block_sums) {
        // d = x - shift: the terms d and d^2 (b is x again, unused).
        sum_rows_by_channel(x, x, sh, channels, first_row, end_row, block_sums,
                            [](auto value, auto, auto shift_c) {
                              const auto d = value - shift_c;
                              return std::pair{d, d * d};
                            });
      },
      sums.data());
  for (int64_t c = 0; c < channels; ++c) {
    const double s1 = sums[static_cast<size_t>(c)];
    const double s2 = sums[static_cast<size_t>(channels + c)];
    mean[c] = sh[c] + s1 / count;
    var[c] = std::max(0.0, (s2 - s1 * s1 / count) / count);
  }
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
  // NHWC: one flat pass, the per-channel constants as periodic patterns.
  const int64_t period = channel_period<T>(channels);
  std::vector<T> patterns(static_cast<size_t>(2 * (period + Vec64<T>::lanes)));
  const Periodic<T> sp = make_periodic(
      patterns.data(), period, [&](int64_t c) { return s[c]; }, channels);
  const Periodic<T> bp = make_periodic(
      patterns.data() + period + Vec64<T>::lanes, period, [&](int64_t c) { return b[c]; },
      channels);
  map_elements(
      layout.outer * channels, y, period, [](auto xe, auto se, auto be) { return xe * se + be; }, x,
      sp, bp);
}

template <typename T>
void batch_norm_gradient_sums(const T* g, const T* x, const BatchNormLayout& layout,
                              const double* mean, double* sum_g, double* sum_g_centered) {
  const int64_t channels = layout.channels;
  const int64_t inner = layout.inner;
  std::vector<double> sums(static_cast<size_t>(2 * channels));
  sum_per_channel<2>(
      layout,
      [g, x, mean, inner](int64_t begin, int64_t c, std::array<double, 2>& total) {
        double sg = 0.0, sgc = 0.0;
        const double mean_c = mean[c];
#pragma omp simd reduction(+ : sg, sgc)
        for (int64_t i = 0; i < inner; ++i) {
          const double ge = double(g[begin + i]);
          sg += ge;
          sgc += ge * (double(x[begin + i]) - mean_c);
        }
        total[0] += sg;
        total[1] += sgc;
      },
      [g, x, mean, channels](int64_t first_row, int64_t end_row, double* block_sums) {
        sum_rows_by_channel(g, x, mean, channels, first_row, end_row, block_sums,
                            [](auto ge, auto xe, auto mean_c) {
                              return std::pair{ge, ge * (xe - mean_c)};
                            });
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
  // NHWC: one flat pass, the per-channel constants as periodic patterns.
  const int64_t period = channel_period<T>(channels);
  const int64_t span = period + Vec64<T>::lanes;
  std::vector<T> patterns(static_cast<size_t>(4 * span));
  const Periodic<T> mp = make_periodic(
      patterns.data(), period, [&](int64_t c) { return m[c]; }, channels);
  const Periodic<T> mgp = make_periodic(
      patterns.data() + span, period, [&](int64_t c) { return mg[c]; }, channels);
  const Periodic<T> prp = make_periodic(
      patterns.data() + 2 * span, period, [&](int64_t c) { return pr[c]; }, channels);
  const Periodic<T> kp = make_periodic(
      patterns.data() + 3 * span, period, [&](int64_t c) { return k[c]; }, channels);
  map_elements(
      layout.outer * channels, gx, period,
      [](auto ge, auto xe, auto me, auto mge, auto pre, auto ke) {
        return ke * (ge - mge - (xe - me) * pre);
      },
      g, x, mp, mgp, prp, kp);
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
