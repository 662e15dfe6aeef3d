// The per-channel reductions of the CPU batch normalization kernels
// (batchnorm2d_cpu.cpp, their only user): sums of per-element terms over
// each channel of a dense NCHW or NHWC tensor, in an order that depends only
// on the shape (not on the thread count), so results are reproducible.
// NCHW gives each thread whole channels; NHWC cuts the rows into fixed
// blocks, sums each block into its own partial row of C values in 64-channel
// register tiles, then adds the blocks in order.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <tuple>
#include <utility>

#include "tensor/activation_layout.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace b3::cpu::batch_norm_detail {

constexpr int64_t kParallelThreshold = int64_t{1} << 15;  // elements worth a thread team

// NHWC reductions sum blocks of rows: 2^17 values (512 KiB of f32 per operand),
// 64 to 2048 rows, so that a block stays in the L2 cache while the 64-channel
// tiles of a narrow row take their turns, and there are few partial rows to
// add at the end.
inline int64_t rows_per_reduction_block(int64_t channels) {
  return std::clamp<int64_t>((int64_t{1} << 17) / std::max<int64_t>(channels, 1), 64, 2048);
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
void sum_per_channel(const ActivationLayout& layout, const PlaneSum& plane_sum,
                     const RowSum& row_sum, double* sums) {
  const int64_t channels = layout.channels;
  const int64_t inner = layout.inner();
  const bool parallel = layout.per_channel() * channels > kParallelThreshold;
  if (inner > 1) {
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t c = 0; c < channels; ++c) {
      std::array<double, K> total{};
      for (int64_t o = 0; o < layout.outer(); ++o) plane_sum((o * channels + c) * inner, c, total);
      for (int k = 0; k < K; ++k) sums[k * channels + c] = total[k];
    }
    return;
  }
  const int64_t rows = layout.outer();
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

}  // namespace b3::cpu::batch_norm_detail
