// CPU kernels of batch normalization (see batchnorm2d_cpu.h for the layout).
//
// Reductions: NCHW (inner > 1) gives each thread whole channels; NHWC
// (inner == 1) cuts the rows into fixed blocks (rows_per_reduction_block),
// sums each block into its own partial row of C values (threads never share
// one), then adds the blocks in order. Elementwise kernels run over (block, channel)
// planes (NCHW) or rows (NHWC), the innermost loop contiguous in memory.
// Each kernel is one template over the activation that follows the
// normalization (Identity for plain batch normalization), so the fused
// BatchNorm + activation op shares every loop with BatchNorm.
#include "layers/batchnorm2d_cpu.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

#include "layers/activations_cpu.h"
#include "tensor/elementwise_cpu.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace b3::cpu {

namespace {

constexpr int64_t kParallelThreshold = int64_t{1} << 15;  // elements worth a thread team

// NHWC reductions sum blocks of rows: 2^17 values (512 KiB of f32 per operand),
// 64 to 2048 rows, so that a block stays in the L2 cache while the 64-channel
// tiles of a narrow row take their turns, and there are few partial rows to
// add at the end.
int64_t rows_per_reduction_block(int64_t channels) {
  return std::clamp<int64_t>((int64_t{1} << 17) / std::max<int64_t>(channels, 1), 64, 2048);
}

// The activations that can follow the normalization, as functors of the
// normalized value y (scalars and vectors alike, like activations_cpu.h):
// value(y) is the forward, gradient(y, g) = g * act'(y) the backward, both
// with PyTorch's definitions (layers/activations.h).
struct Identity {
  template <typename V>
  static V value(V y) {
    return y;
  }
  template <typename V>
  static V gradient(V, V g) {
    return g;
  }
};

struct Relu {
  template <typename V>
  static V value(V y) {
    return y > 0 ? y : 0;
  }
  template <typename V>
  static V gradient(V y, V g) {
    return y > 0 ? g : 0;
  }
};

struct Hardswish {
  template <typename V>
  static V value(V y) {
    return y * relu6_of_x_plus_3(y) / 6;
  }
  template <typename V>
  static V gradient(V y, V g) {
    // 0.5f is exact in float and double, and keeps a float scalar in float.
    const V slope = y < -3 ? 0 : (y > 3 ? 1 : y / 3 + 0.5f);
    return g * slope;
  }
};

// Calls fn(Act{}) with the functor of `kind`.
template <typename Fn>
void with_activation(BatchNormActivation kind, const Fn& fn) {
  switch (kind) {
    case BatchNormActivation::none: fn(Identity{}); return;
    case BatchNormActivation::relu: fn(Relu{}); return;
    case BatchNormActivation::hardswish: fn(Hardswish{}); return;
  }
}

// NHWC reductions work on eight channels at a time in double (GCC/Clang
// vector extensions: one AVX-512 register, or two AVX2 ones), in tiles of up
// to 64 channels (sum_rows_by_channel). Values are loaded eight at a time in
// their own type (Float8 or Double8), so that an activation's
// derivative is computed in T exactly as the forward computed the activation,
// then widened to double for the sums.
typedef double Double8 __attribute__((vector_size(64)));
typedef float Float8 __attribute__((vector_size(32)));

inline Float8 load8(const float* p) {
  Float8 f;
  std::memcpy(&f, p, sizeof f);
  return f;
}
inline Double8 load8(const double* p) {
  Double8 d;
  std::memcpy(&d, p, sizeof d);
  return d;
}
inline Double8 widen(Float8 v) {
#if defined(__AVX512F__)
  // One vcvtps2pd; GCC lowers __builtin_convertvector to two halves and an insert.
  const __m512d d = _mm512_cvtps_pd(reinterpret_cast<const __m256&>(v));
  return reinterpret_cast<const Double8&>(d);
#else
  return __builtin_convertvector(v, Double8);
#endif
}
inline Double8 widen(Double8 v) { return v; }
inline double widen(double v) { return v; }
inline void store_double8(double* p, Double8 v) { std::memcpy(p, &v, sizeof v); }

// Sums over rows [first, end) of an NHWC block of the pair of terms
// pair(value of a, value of b, value of each per-channel constant) for every
// channel, into out[c] (first term) and out[C + c] (second). `pair` returns
// the two terms for one element (as Double8 for eight channels' values, or
// as double for one channel's) and is called with vectors of eight values in
// their own type (Float8 or Double8) and with scalars.
//
// Rows of up to 64 channels go in tiles of Groups x 8 channels (64, then 16,
// then 8, then one at a time), each tile's 2 x Groups accumulators in
// registers while the rows run: a whole row of 64 channels is read at once
// (256 contiguous bytes), which the prefetchers follow at memory speed, where
// 16-channel tiles (one cache line per row, rows 256 bytes apart) left them
// stalling. Every channel's terms are added row by row in order, whatever
// the path.
template <int Groups, typename T, typename Pair, typename... Constant>
void sum_rows_of_tile(const T* a, const T* b, int64_t channels, int64_t c0, int64_t first,
                      int64_t end, double* out, const Pair& pair, const Constant*... constants) {
  using Constants = std::tuple<decltype(load8(constants))...>;
  Constants k[Groups];
  Double8 u[Groups], v[Groups];
#pragma GCC unroll 8
  for (int i = 0; i < Groups; ++i) {
    k[i] = Constants{load8(constants + c0 + 8 * i)...};
    u[i] = Double8{};
    v[i] = Double8{};
  }
  for (int64_t r = first; r < end; ++r) {
    const T* ar = a + r * channels + c0;
    const T* br = b + r * channels + c0;
#pragma GCC unroll 8
    for (int i = 0; i < Groups; ++i) {
      const auto [p, q] = std::apply(
          [&](auto... kc) { return pair(load8(ar + 8 * i), load8(br + 8 * i), kc...); }, k[i]);
      u[i] += p;
      v[i] += q;
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < Groups; ++i) {
    store_double8(out + c0 + 8 * i, u[i]);
    store_double8(out + channels + c0 + 8 * i, v[i]);
  }
}

// Wider rows (C > 64) are summed row after row instead, into the 2 x C
// accumulators of `out` (at most 16 KiB, in the L1 cache): memory is read
// in order, where 64-channel tiles would fetch a few lines of every row, rows
// kilobytes apart, again and again.
template <typename T, typename Pair, typename... Constant>
void sum_rows_streaming(const T* a, const T* b, int64_t channels, int64_t first, int64_t end,
                        double* out, const Pair& pair, const Constant*... constants) {
  std::fill(out, out + 2 * channels, 0.0);
  const int64_t vector_end = channels / 8 * 8;
  // Four rows per trip through the accumulators, added one row after another
  // (the same order as row by row), to spare the L1 cache three of every
  // four loads and stores of them.
  constexpr int64_t kRows = 4;
  for (int64_t r = first; r < end; r += kRows) {
    const int64_t count = std::min(kRows, end - r);
    const T* ar = a + r * channels;
    const T* br = b + r * channels;
    for (int64_t c0 = 0; c0 < vector_end; c0 += 8) {
      const auto k = std::tuple{load8(constants + c0)...};
      Double8 u = load8(out + c0), v = load8(out + channels + c0);
      for (int64_t i = 0; i < count; ++i) {
        const auto [p, q] = std::apply(
            [&](auto... kc) {
              return pair(load8(ar + i * channels + c0), load8(br + i * channels + c0), kc...);
            },
            k);
        u += p;
        v += q;
      }
      store_double8(out + c0, u);
      store_double8(out + channels + c0, v);
    }
    for (int64_t c = vector_end; c < channels; ++c) {
      for (int64_t i = 0; i < count; ++i) {
        const auto [p, q] = pair(ar[i * channels + c], br[i * channels + c], constants[c]...);
        out[c] += p;
        out[channels + c] += q;
      }
    }
  }
}

template <typename T, typename Pair, typename... Constant>
void sum_rows_by_channel(const T* a, const T* b, int64_t channels, int64_t first, int64_t end,
                         double* out, const Pair& pair, const Constant*... constants) {
  if (channels > 64) {
    sum_rows_streaming(a, b, channels, first, end, out, pair, constants...);
    return;
  }
  int64_t c0 = 0;
  for (; c0 + 64 <= channels; c0 += 64)
    sum_rows_of_tile<8>(a, b, channels, c0, first, end, out, pair, constants...);
  for (; c0 + 16 <= channels; c0 += 16)
    sum_rows_of_tile<2>(a, b, channels, c0, first, end, out, pair, constants...);
  for (; c0 + 8 <= channels; c0 += 8)
    sum_rows_of_tile<1>(a, b, channels, c0, first, end, out, pair, constants...);
  for (; c0 < channels; ++c0) {
    double u = 0.0, v = 0.0;
    for (int64_t r = first; r < end; ++r) {
      const auto [p, q] = pair(a[r * channels + c0], b[r * channels + c0], constants[c0]...);
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
  // Every block writes all K * C of its partial sums: no zero-fill needed.
  const std::unique_ptr<double[]> partial(new double[static_cast<size_t>(blocks * K * channels)]);
  const int64_t columns = K * channels;
#pragma omp parallel if (parallel)
  {
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < blocks; ++b) {
      row_sum(b * rows_per_block, std::min(rows, (b + 1) * rows_per_block),
              partial.get() + b * columns);
    }
    // The blocks in order, column by column (16 columns per thread task).
#pragma omp for schedule(static)
    for (int64_t j0 = 0; j0 < columns; j0 += 16) {
      const int64_t j1 = std::min(columns, j0 + 16);
      for (int64_t j = j0; j < j1; ++j) sums[j] = 0.0;
      for (int64_t b = 0; b < blocks; ++b) {
        const double* block_sums = partial.get() + b * columns;
#pragma omp simd
        for (int64_t j = j0; j < j1; ++j) sums[j] += block_sums[j];
      }
    }
  }
}

template <typename T>
std::vector<T> to_type(const double* values, int64_t n) {
  return std::vector<T>(values, values + n);
}

// An activation's scale or shift in T; zeros (never used) without an activation.
template <typename T>
std::vector<T> activation_constants(const NormalizedActivation& activation, const double* values,
                                    int64_t n) {
  if (activation.kind == BatchNormActivation::none) return std::vector<T>(static_cast<size_t>(n));
  return to_type<T>(values, n);
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
        sum_rows_by_channel(
            x, x, channels, first_row, end_row, block_sums,
            [](auto value, auto, auto shift_c) {
              const auto d = widen(value) - shift_c;
              return std::pair{d, d * d};
            },
            sh);
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
                            const double* shift, BatchNormActivation activation) {
  const int64_t channels = layout.channels;
  const int64_t inner = layout.inner;
  const std::vector<T> s = to_type<T>(scale, channels);
  const std::vector<T> b = to_type<T>(shift, channels);
  const bool parallel = layout.per_channel() * channels > kParallelThreshold;
  with_activation(activation, [&](auto act) {
    using Act = decltype(act);
    if (inner > 1) {
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
      for (int64_t o = 0; o < layout.outer; ++o) {
        for (int64_t c = 0; c < channels; ++c) {
          const int64_t base = (o * channels + c) * inner;
          const T sc = s[c];
          const T sh = b[c];
#pragma omp simd
          for (int64_t i = 0; i < inner; ++i) y[base + i] = Act::value(x[base + i] * sc + sh);
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
        layout.outer * channels, y, period,
        [](auto xe, auto se, auto be) { return Act::value(xe * se + be); }, x, sp, bp);
  });
}

// The backward kernels below take g = dL/d act(y) and form gy = dL/dy as
// Act::gradient(y, g), with y = x * scale + shift recomputed in T from the
// same T constants as the forward (Identity: gy = g, y unused).
template <typename T>
void batch_norm_gradient_sums(const T* g, const T* x, const BatchNormLayout& layout,
                              const double* mean, double* sum_g, double* sum_g_centered,
                              const NormalizedActivation& activation) {
  const int64_t channels = layout.channels;
  const int64_t inner = layout.inner;
  const std::vector<T> scale = activation_constants<T>(activation, activation.scale, channels);
  const std::vector<T> shift = activation_constants<T>(activation, activation.shift, channels);
  const T* sc = scale.data();
  const T* sh = shift.data();
  std::vector<double> sums(static_cast<size_t>(2 * channels));
  with_activation(activation.kind, [&](auto act) {
    using Act = decltype(act);
    sum_per_channel<2>(
        layout,
        [g, x, mean, sc, sh, inner](int64_t begin, int64_t c, std::array<double, 2>& total) {
          double sg = 0.0, sgc = 0.0;
          const double mean_c = mean[c];
          const T scale_c = sc[c], shift_c = sh[c];
#pragma omp simd reduction(+ : sg, sgc)
          for (int64_t i = 0; i < inner; ++i) {
            const T xe = x[begin + i];
            const double gy = double(Act::gradient(T(xe * scale_c + shift_c), g[begin + i]));
            sg += gy;
            sgc += gy * (double(xe) - mean_c);
          }
          total[0] += sg;
          total[1] += sgc;
        },
        [g, x, mean, sc, sh, channels](int64_t first_row, int64_t end_row, double* block_sums) {
          sum_rows_by_channel(
              g, x, channels, first_row, end_row, block_sums,
              [](auto ge, auto xe, auto mean_c, auto scale_c, auto shift_c) {
                const auto gy = widen(Act::gradient(xe * scale_c + shift_c, ge));
                return std::pair{gy, gy * (widen(xe) - mean_c)};
              },
              mean, sc, sh);
        },
        sums.data());
  });
  std::copy(sums.begin(), sums.begin() + channels, sum_g);
  std::copy(sums.begin() + channels, sums.end(), sum_g_centered);
}

template <typename T>
void batch_norm_input_gradient(const T* g, const T* x, T* gx, const BatchNormLayout& layout,
                               const double* mean, const double* mean_g, const double* projection,
                               const double* gain, const NormalizedActivation& activation) {
  const int64_t channels = layout.channels;
  const int64_t inner = layout.inner;
  const std::vector<T> m = to_type<T>(mean, channels);
  const std::vector<T> mg = to_type<T>(mean_g, channels);
  const std::vector<T> pr = to_type<T>(projection, channels);
  const std::vector<T> k = to_type<T>(gain, channels);
  const std::vector<T> s = activation_constants<T>(activation, activation.scale, channels);
  const std::vector<T> b = activation_constants<T>(activation, activation.shift, channels);
  const bool parallel = layout.per_channel() * channels > kParallelThreshold;
  with_activation(activation.kind, [&](auto act) {
    using Act = decltype(act);
    if (inner > 1) {
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
      for (int64_t o = 0; o < layout.outer; ++o) {
        for (int64_t c = 0; c < channels; ++c) {
          const int64_t base = (o * channels + c) * inner;
          const T mc = m[c], mgc = mg[c], prc = pr[c], kc = k[c], sc = s[c], sh = b[c];
#pragma omp simd
          for (int64_t i = 0; i < inner; ++i) {
            const T xe = x[base + i];
            const T gy = Act::gradient(T(xe * sc + sh), g[base + i]);
            gx[base + i] = kc * (gy - mgc - (xe - mc) * prc);
          }
        }
      }
      return;
    }
    // NHWC: one flat pass, the per-channel constants as periodic patterns.
    const int64_t period = channel_period<T>(channels);
    const int64_t span = period + Vec64<T>::lanes;
    std::vector<T> patterns(static_cast<size_t>(6 * span));
    const auto pattern_of = [&](int slot, const std::vector<T>& values) {
      return make_periodic(
          patterns.data() + slot * span, period, [&](int64_t c) { return values[c]; }, channels);
    };
    map_elements(
        layout.outer * channels, gx, period,
        [](auto ge, auto xe, auto me, auto mge, auto pre, auto ke, auto se, auto be) {
          return ke * (Act::gradient(xe * se + be, ge) - mge - (xe - me) * pre);
        },
        g, x, pattern_of(0, m), pattern_of(1, mg), pattern_of(2, pr), pattern_of(3, k),
        pattern_of(4, s), pattern_of(5, b));
  });
}

#define B3_INSTANTIATE_BATCH_NORM(T)                                                           \
  template void batch_norm_statistics<T>(const T*, const BatchNormLayout&, double*, double*);  \
  template void batch_norm_scale_shift<T>(const T*, T*, const BatchNormLayout&, const double*, \
                                          const double*, BatchNormActivation);                 \
  template void batch_norm_gradient_sums<T>(const T*, const T*, const BatchNormLayout&,        \
                                            const double*, double*, double*,                   \
                                            const NormalizedActivation&);                      \
  template void batch_norm_input_gradient<T>(const T*, const T*, T*, const BatchNormLayout&,   \
                                             const double*, const double*, const double*,      \
                                             const double*, const NormalizedActivation&);

B3_INSTANTIATE_BATCH_NORM(float)
B3_INSTANTIATE_BATCH_NORM(double)

#undef B3_INSTANTIATE_BATCH_NORM

}  // namespace b3::cpu
