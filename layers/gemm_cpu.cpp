// Single-precision GEMMs for the NHWC convolutions (see gemm_cpu.h): AVX-512
// register-blocked kernels that read the tall activation matrix in place and
// pack only the small weight matrix; Eigen where AVX-512 is not compiled in.
//
// gemm_rows, C = A * op(B): op(B) is packed into panels 32 columns wide
// (k-major, zero-padded), and a tile of 12 rows x 32 columns of C lives in 24
// vector registers while k runs: per k, two vector loads of the panel and
// twelve broadcasts of A feed 24 fused multiply-adds. Threads take tiles of
// rows, so each element of C is computed by one thread in one order.
//
// gemm_at_b, C = A^T * B: a tile of 12 columns of A (rows of C) x 32 columns
// of B (columns of C) lives in registers while the kernel runs down a chunk
// of 256 rows of A and B (both contiguous per row: twelve broadcasts, two
// vector loads, 24 multiply-adds per row). The M rows are cut into slices
// (RowSlices: at most 4096 rows, fixed by M); each slice sums into its own
// partial C, and the partials are added in slice order, so the result does
// not depend on the thread count.
#include "layers/gemm_cpu.h"

#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "tensor/elementwise_cpu.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace b3::cpu {

namespace {

// Scratch space the kernels write in full before reading (packed panels,
// partial sums): not zero-filled, unlike a std::vector.
using Buffer = std::unique_ptr<float[]>;
inline Buffer uninitialized(int64_t count) {
  return Buffer(new float[static_cast<size_t>(std::max<int64_t>(count, 1))]);
}

// A parallel region costs microseconds: worth it above ~2^18 multiply-adds.
inline bool worth_threads(int64_t m, int64_t n, int64_t k) { return m * n * k > (1 << 18); }

using RowMajorMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixView = Eigen::Map<RowMajorMatrix, Eigen::Unaligned, Eigen::OuterStride<>>;
using ConstMatrixView = Eigen::Map<const RowMajorMatrix, Eigen::Unaligned, Eigen::OuterStride<>>;

[[maybe_unused]] void eigen_gemm_rows(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                                      const float* b, int64_t ldb, bool b_transposed, float* c,
                                      int64_t ldc, bool accumulate) {
  MatrixView cm(c, m, n, Eigen::OuterStride<>(ldc));
  const ConstMatrixView am(a, m, k, Eigen::OuterStride<>(lda));
  if (b_transposed) {
    const ConstMatrixView bm(b, n, k, Eigen::OuterStride<>(ldb));
    if (accumulate) {
      cm.noalias() += am * bm.transpose();
    } else {
      cm.noalias() = am * bm.transpose();
    }
  } else {
    const ConstMatrixView bm(b, k, n, Eigen::OuterStride<>(ldb));
    if (accumulate) {
      cm.noalias() += am * bm;
    } else {
      cm.noalias() = am * bm;
    }
  }
}

[[maybe_unused]] void eigen_gemm_at_b(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                                      const float* b, int64_t ldb, float* c, int64_t ldc,
                                      bool accumulate) {
  MatrixView cm(c, n, k, Eigen::OuterStride<>(ldc));
  const ConstMatrixView am(a, m, n, Eigen::OuterStride<>(lda));
  const ConstMatrixView bm(b, m, k, Eigen::OuterStride<>(ldb));
  if (accumulate) {
    cm.noalias() += am.transpose() * bm;
  } else {
    cm.noalias() = am.transpose() * bm;
  }
}

#if defined(__AVX512F__)

constexpr int kLanes = 16;              // floats per vector
constexpr int kTileRows = 12;           // rows of a register tile
constexpr int kPanelWidth = 32;         // columns of a register tile: two vectors
constexpr int64_t kChunkRows = 256;     // gemm_at_b: rows per pass over a tile (fits L2)
constexpr int64_t kSliceRows = 4096;    // gemm_at_b: most rows summed into one partial C
constexpr int kFewTilesPerThread = 16;  // gemm_rows: below, threads share (tile, panel) pairs

// The row slices of gemm_at_b's reduction over m rows: one slice up to 4096
// rows; above, an even number of slices of at most 4096 rows, equal to within
// a row (two threads get equal halves). It depends on m only, so the order of
// the additions does too.
struct RowSlices {
  int64_t m, count;
  explicit RowSlices(int64_t rows)
      : m(rows),
        count(rows <= kSliceRows ? 1 : 2 * ((rows + 2 * kSliceRows - 1) / (2 * kSliceRows))) {}
  int64_t begin(int64_t s) const { return s * m / count; }
  int64_t end(int64_t s) const { return (s + 1) * m / count; }
};

// The first `count` lanes (none for count <= 0, all 16 from 16 on).
inline __mmask16 first_lanes(int64_t count) {
  if (count <= 0) return 0;
  return count >= kLanes ? static_cast<__mmask16>(0xFFFF)
                         : static_cast<__mmask16>((1u << count) - 1u);
}

// The lanes of the last vector of a `width`-column tile that hold columns.
inline __mmask16 tail_mask(int64_t width, int vectors) {
  return first_lanes(width - static_cast<int64_t>(vectors - 1) * kLanes);
}

// How a tile of C is written: overwritten, added to, or overwritten with
// streaming stores (whole 64-byte vectors at 64-byte aligned addresses; see
// elementwise_cpu.h for why large outputs are streamed).
enum class Store { overwrite, accumulate, stream };

// C[0..Rows, 0..16*Vectors) (+)= A[0..Rows, 0..k) * panel, panel k-major with
// 16*Vectors floats per k. The last vector's columns are limited by `mask`.
template <int Rows, int Vectors>
void rows_tile(int64_t k, const float* a, int64_t lda, const float* panel, float* c, int64_t ldc,
               __mmask16 mask, Store store, const OutputEpilogue<float>& epilogue) {
  __m512 acc[Rows][Vectors];
#pragma GCC unroll 16
  for (int i = 0; i < Rows; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int64_t kk = 0; kk < k; ++kk) {
    __m512 bv[Vectors];
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v)
      bv[v] = _mm512_loadu_ps(panel + kk * Vectors * kLanes + v * kLanes);
#pragma GCC unroll 16
    for (int i = 0; i < Rows; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i * lda + kk]);
#pragma GCC unroll 4
      for (int v = 0; v < Vectors; ++v) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
    }
  }
  __m512 scale[Vectors], shift[Vectors];
  if (epilogue.active()) {
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v) {
      const __mmask16 lanes = v == Vectors - 1 ? mask : static_cast<__mmask16>(0xFFFF);
      scale[v] = _mm512_maskz_loadu_ps(lanes, epilogue.scale + v * kLanes);
      shift[v] = _mm512_maskz_loadu_ps(lanes, epilogue.shift + v * kLanes);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < Rows; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v) {
      const __mmask16 lanes = v == Vectors - 1 ? mask : static_cast<__mmask16>(0xFFFF);
      float* dst = c + i * ldc + v * kLanes;
      __m512 result = acc[i][v];
      if (store == Store::accumulate) {
        result = _mm512_add_ps(result, _mm512_maskz_loadu_ps(lanes, dst));
      }
      if (epilogue.active()) {
        result = scale_shift_activation(epilogue.activation, result, scale[v], shift[v]);
        if (epilogue.residual != nullptr) {
          result = _mm512_add_ps(
              result, _mm512_maskz_loadu_ps(lanes, epilogue.residual + i * ldc + v * kLanes));
        }
      }
      if (store == Store::stream && lanes == 0xFFFF) {
        _mm512_stream_ps(dst, result);
      } else {
        _mm512_mask_storeu_ps(dst, lanes, result);
      }
    }
  }
}

template <int Vectors>
void rows_tile_any(int rows, int64_t k, const float* a, int64_t lda, const float* panel, float* c,
                   int64_t ldc, __mmask16 mask, Store store,
                   const OutputEpilogue<float>& epilogue) {
  switch (rows) {
#define B3_ROWS_CASE(R) \
  case R: rows_tile<R, Vectors>(k, a, lda, panel, c, ldc, mask, store, epilogue); break;
    B3_ROWS_CASE(1)
    B3_ROWS_CASE(2)
    B3_ROWS_CASE(3)
    B3_ROWS_CASE(4)
    B3_ROWS_CASE(5)
    B3_ROWS_CASE(6)
    B3_ROWS_CASE(7)
    B3_ROWS_CASE(8)
    B3_ROWS_CASE(9)
    B3_ROWS_CASE(10)
    B3_ROWS_CASE(11)
    B3_ROWS_CASE(12)
#undef B3_ROWS_CASE
    default: break;
  }
}

// The 16 x 16 floats of r transposed in registers: afterwards r[q][i] is
// what r[i][q] was (pairs, then pairs of pairs within 128-bit lanes, then
// the lanes themselves).
inline void transpose_16x16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 4; ++j) {
      t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0x88);
      t[8 * i + 4 + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0xdd);
    }
  }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
  }
}

// op(B) of gemm_rows in panels of 32 columns (the last one 16 or 32 wide),
// k-major, zero-padded: panel p starts at p * k * 32. pack_panel writes one
// panel with masked vector loads (lanes past the panel's columns or past k
// read as zeros and touch no memory) and whole-vector stores.
void pack_panel(int64_t p, int64_t n, int64_t k, const float* b, int64_t ldb, bool b_transposed,
                float* packed) {
  const int64_t first = p * kPanelWidth;
  const int64_t width = std::min<int64_t>(kPanelWidth, n - first);
  const int64_t stride = width > kLanes ? 2 * kLanes : kLanes;
  float* panel = packed + p * k * kPanelWidth;
  if (b_transposed) {
    // op(B)[kk, first + j] = B[(first + j) * ldb + kk]: blocks of 16 columns
    // x 16 k, each column's 16 k one load, transposed into 16 panel rows.
    for (int64_t j0 = 0; j0 < stride; j0 += kLanes) {
      const int64_t columns = std::max<int64_t>(0, std::min<int64_t>(kLanes, width - j0));
      for (int64_t k0 = 0; k0 < k; k0 += kLanes) {
        const int64_t depth = std::min<int64_t>(kLanes, k - k0);
        const __mmask16 along_k = first_lanes(depth);
        __m512 r[kLanes];
        for (int64_t jj = 0; jj < kLanes; ++jj) {
          r[jj] = jj < columns ? _mm512_maskz_loadu_ps(along_k, b + (first + j0 + jj) * ldb + k0)
                               : _mm512_setzero_ps();
        }
        transpose_16x16(r);
        for (int64_t q = 0; q < depth; ++q) _mm512_storeu_ps(panel + (k0 + q) * stride + j0, r[q]);
      }
    }
  } else {
    // op(B)[kk, first + j] = B[kk * ldb + first + j]: one row of B per k.
    const __mmask16 low = first_lanes(width), high = first_lanes(width - kLanes);
    for (int64_t kk = 0; kk < k; ++kk) {
      const float* row = b + kk * ldb + first;
      _mm512_storeu_ps(panel + kk * stride, _mm512_maskz_loadu_ps(low, row));
      if (stride > kLanes)
        _mm512_storeu_ps(panel + kk * stride + kLanes, _mm512_maskz_loadu_ps(high, row + kLanes));
    }
  }
}

int64_t panel_count(int64_t n) { return (n + kPanelWidth - 1) / kPanelWidth; }

// Rows [r0, r0 + 12) (fewer at the end) of C (+)= A * op(B), the 32 (or
// fewer) columns of panel p.
void rows_tile_panel(int64_t r0, int64_t p, int64_t m, int64_t n, int64_t k, const float* a,
                     int64_t lda, const float* packed, float* c, int64_t ldc, Store store,
                     const OutputEpilogue<float>& epilogue) {
  const int rows = static_cast<int>(std::min<int64_t>(kTileRows, m - r0));
  const int64_t first = p * kPanelWidth;
  const int64_t width = std::min<int64_t>(kPanelWidth, n - first);
  const float* panel = packed + first * k;
  float* tile = c + r0 * ldc + first;
  const OutputEpilogue<float> tile_epilogue = epilogue.at(r0 * ldc + first, first);
  if (width > kLanes) {
    rows_tile_any<2>(rows, k, a + r0 * lda, lda, panel, tile, ldc, tail_mask(width, 2), store,
                     tile_epilogue);
  } else {
    rows_tile_any<1>(rows, k, a + r0 * lda, lda, panel, tile, ldc, tail_mask(width, 1), store,
                     tile_epilogue);
  }
}

// Rows [r0, r0 + 12) (fewer at the end) of C (+)= A * op(B), all columns.
void rows_tile_row(int64_t r0, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                   const float* packed, float* c, int64_t ldc, Store store,
                   const OutputEpilogue<float>& epilogue = {}) {
  for (int64_t p = 0; p < panel_count(n); ++p)
    rows_tile_panel(r0, p, m, n, k, a, lda, packed, c, ldc, store, epilogue);
}

// How gemm_rows writes a C of m rows: streamed when it is large, aligned and
// overwritten.
Store store_mode(const float* c, int64_t m, int64_t ldc, bool accumulate) {
  if (accumulate) return Store::accumulate;
  if (ldc % kLanes == 0 && use_streaming(c, m * ldc)) return Store::stream;
  return Store::overwrite;
}

void avx512_gemm_rows(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                      int64_t ldb, bool b_transposed, float* c, int64_t ldc, bool accumulate,
                      const OutputEpilogue<float>& epilogue) {
  const int64_t panels = panel_count(n);
  const Buffer packed = uninitialized(panels * k * kPanelWidth);
  const int64_t tiles = (m + kTileRows - 1) / kTileRows;
  const Store store = store_mode(c, m, ldc, accumulate);
#pragma omp parallel if (worth_threads(m, n, k))
  {
#pragma omp for schedule(static)
    for (int64_t p = 0; p < panels; ++p) pack_panel(p, n, k, b, ldb, b_transposed, packed.get());
    if (tiles >= kFewTilesPerThread * omp_get_num_threads()) {
      // Guided: big runs of tiles first, then smaller ones, so that a thread
      // on a slower (shared) core does not hold the other up at the end.
#pragma omp for schedule(guided, 4)
      for (int64_t t = 0; t < tiles; ++t)
        rows_tile_row(t * kTileRows, m, n, k, a, lda, packed.get(), c, ldc, store, epilogue);
    } else {
      // Few rows (a Linear layer, a convolution at 1x1 or 2x2 pixels): too few
      // tiles of rows to share out evenly, so threads take (tile, panel)
      // pairs, panel-major, so that consecutive pairs share a panel in cache.
#pragma omp for schedule(dynamic, 1)
      for (int64_t item = 0; item < tiles * panels; ++item)
        rows_tile_panel((item % tiles) * kTileRows, item / tiles, m, n, k, a, lda, packed.get(), c,
                        ldc, store, epilogue);
    }
    if (store == Store::stream) stream_fence();
  }
}

// C[0..Rows, 0..16*Vectors) (+)= sum over `count` rows r of A[r, 0..Rows]^T B[r, 0..16*Vectors).
template <int Rows, int Vectors>
void at_b_tile(int64_t count, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
               int64_t ldc, __mmask16 mask, bool accumulate) {
  __m512 acc[Rows][Vectors];
#pragma GCC unroll 16
  for (int i = 0; i < Rows; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int64_t r = 0; r < count; ++r) {
    const float* b_row = b + r * ldb;
    const float* a_row = a + r * lda;
    __m512 bv[Vectors];
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v) {
      bv[v] = v == Vectors - 1 ? _mm512_maskz_loadu_ps(mask, b_row + v * kLanes)
                               : _mm512_loadu_ps(b_row + v * kLanes);
    }
#pragma GCC unroll 16
    for (int i = 0; i < Rows; ++i) {
      const __m512 ai = _mm512_set1_ps(a_row[i]);
#pragma GCC unroll 4
      for (int v = 0; v < Vectors; ++v) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < Rows; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v) {
      const __mmask16 lanes = v == Vectors - 1 ? mask : static_cast<__mmask16>(0xFFFF);
      float* dst = c + i * ldc + v * kLanes;
      __m512 result = acc[i][v];
      if (accumulate) result = _mm512_add_ps(result, _mm512_maskz_loadu_ps(lanes, dst));
      _mm512_mask_storeu_ps(dst, lanes, result);
    }
  }
}

template <int Vectors>
void at_b_tile_any(int rows, int64_t count, const float* a, int64_t lda, const float* b,
                   int64_t ldb, float* c, int64_t ldc, __mmask16 mask, bool accumulate) {
  switch (rows) {
#define B3_ROWS_CASE(R) \
  case R: at_b_tile<R, Vectors>(count, a, lda, b, ldb, c, ldc, mask, accumulate); break;
    B3_ROWS_CASE(1)
    B3_ROWS_CASE(2)
    B3_ROWS_CASE(3)
    B3_ROWS_CASE(4)
    B3_ROWS_CASE(5)
    B3_ROWS_CASE(6)
    B3_ROWS_CASE(7)
    B3_ROWS_CASE(8)
    B3_ROWS_CASE(9)
    B3_ROWS_CASE(10)
    B3_ROWS_CASE(11)
    B3_ROWS_CASE(12)
#undef B3_ROWS_CASE
    default: break;
  }
}

// One slice of rows [m0, m1) of C (+)= A^T B, for the rows [c_begin, c_end) of C
// (in tiles of 12 from c_begin), all columns. The chunk of 256 rows of A and B
// is the outer loop, so every tile and panel reuses it from the L2 cache.
void at_b_slice_tiles(int64_t m0, int64_t m1, int64_t c_begin, int64_t c_end, int64_t k,
                      const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                      int64_t ldc, bool accumulate_into_c) {
  // When a chunk of B serves four or more tiles, its panels are first copied
  // to contiguous [rows][32] blocks (and likewise a tile's 12 columns of A when
  // four or more panels use them): the kernels then stream contiguous memory
  // instead of rows `ldb` apart, which the cache and prefetchers handle far
  // better for wide rows. Small products read A and B in place.
  const int64_t panels = (k + kPanelWidth - 1) / kPanelWidth;
  const bool pack_b = c_end - c_begin > 3 * kTileRows && k > kPanelWidth;  // 1 panel: contiguous
  const bool pack_a = panels >= 4;
  const Buffer b_pack = uninitialized(pack_b ? kChunkRows * panels * kPanelWidth : 0);
  const Buffer a_pack = uninitialized(pack_a ? kChunkRows * kTileRows : 0);
  for (int64_t r0 = m0; r0 < m1; r0 += kChunkRows) {
    const int64_t count = std::min(kChunkRows, m1 - r0);
    const bool accumulate = r0 > m0 || accumulate_into_c;
    if (pack_b) {
      for (int64_t p = 0; p < panels; ++p) {
        const int64_t first = p * kPanelWidth;
        const int64_t width = std::min<int64_t>(kPanelWidth, k - first);
        const int vectors = width > kLanes ? 2 : 1;
        const __mmask16 last = tail_mask(width, vectors);
        float* dst = b_pack.get() + p * kChunkRows * kPanelWidth;
        for (int64_t r = 0; r < count; ++r) {
          const float* src = b + (r0 + r) * ldb + first;
          float* row = dst + r * vectors * kLanes;
          // Masked loads read zeros past the width: the padding comes with the copy.
          if (vectors == 2) _mm512_storeu_ps(row, _mm512_loadu_ps(src));
          _mm512_storeu_ps(row + (vectors - 1) * kLanes,
                           _mm512_maskz_loadu_ps(last, src + (vectors - 1) * kLanes));
        }
      }
    }
    for (int64_t n0 = c_begin; n0 < c_end; n0 += kTileRows) {
      const int rows = static_cast<int>(std::min<int64_t>(kTileRows, c_end - n0));
      const float* a_block = a + r0 * lda + n0;
      int64_t a_ld = lda;
      if (pack_a) {
        // One masked vector per row (12 floats or fewer): a call to memcpy
        // per 48-byte row cost more than the copy, and as much as half the
        // multiply-adds of a chunk.
        const __mmask16 lanes = first_lanes(rows);
        for (int64_t r = 0; r < count; ++r) {
          _mm512_mask_storeu_ps(a_pack.get() + r * kTileRows, lanes,
                                _mm512_maskz_loadu_ps(lanes, a_block + r * lda));
        }
        a_block = a_pack.get();
        a_ld = kTileRows;
      }
      for (int64_t p = 0; p < panels; ++p) {
        const int64_t first = p * kPanelWidth;
        const int64_t width = std::min<int64_t>(kPanelWidth, k - first);
        const float* b_block = b + r0 * ldb + first;
        int64_t b_ld = ldb;
        if (pack_b) {
          b_block = b_pack.get() + p * kChunkRows * kPanelWidth;
          b_ld = width > kLanes ? 2 * kLanes : kLanes;
        }
        float* tile = c + n0 * ldc + first;
        if (width > kLanes) {
          at_b_tile_any<2>(rows, count, a_block, a_ld, b_block, b_ld, tile, ldc,
                           tail_mask(width, 2), accumulate);
        } else {
          at_b_tile_any<1>(rows, count, a_block, a_ld, b_block, b_ld, tile, ldc,
                           tail_mask(width, 1), accumulate);
        }
      }
    }
  }
}

// at_b_slice_tiles for every shape: a C of at most 16 columns (k) and at
// least 32 rows is computed transposed, C^T = B^T A, so that the register
// tile spans two vectors of A's columns (24 multiply-adds per 14 loads)
// instead of one vector of k (12 per 13), then transposed into C. Each
// element is the same sum of the same products in the same order, so the
// result is bit-identical; when adding into an existing C the rounding order
// would differ, and the plain form is kept.
void at_b_slice(int64_t m0, int64_t m1, int64_t c_begin, int64_t c_end, int64_t k, const float* a,
                int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                bool accumulate_into_c) {
  const int64_t rows = c_end - c_begin;
  if (accumulate_into_c || k > kLanes || rows < kPanelWidth) {
    at_b_slice_tiles(m0, m1, c_begin, c_end, k, a, lda, b, ldb, c, ldc, accumulate_into_c);
    return;
  }
  const Buffer transposed = uninitialized(k * rows);  // C^T [k, rows]
  at_b_slice_tiles(m0, m1, 0, k, rows, b, ldb, a + c_begin, lda, transposed.get(), rows, false);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < k; ++j) c[(c_begin + i) * ldc + j] = transposed[j * rows + i];
}

// C (+)= the sum of `slices` dense [n, k] partials, added in slice order.
void sum_partials(int64_t n, int64_t k, int64_t slices, const float* partial, float* c, int64_t ldc,
                  bool accumulate, bool parallel) {
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t i = 0; i < n; ++i) {
    float* out = c + i * ldc;
    if (!accumulate) std::fill(out, out + k, 0.0f);
    for (int64_t s = 0; s < slices; ++s) {
      const float* slice = partial + (s * n + i) * k;
#pragma omp simd
      for (int64_t j = 0; j < k; ++j) out[j] += slice[j];
    }
  }
}

void avx512_gemm_at_b(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                      int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  if (m == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < n; ++i) std::fill(c + i * ldc, c + i * ldc + k, 0.0f);
    return;
  }
  const RowSlices slices(m);
  const bool parallel = worth_threads(m, n, k);
  // Threads share the work as (slice, group of rows of C) units, the groups
  // equal to within a row; a group's tiles reuse each chunk of rows from
  // cache. Every element of C is summed in the same order whatever the grouping.
  const int threads = parallel ? omp_get_max_threads() : 1;
  const int64_t wanted = slices.count >= threads ? 1 : (threads + slices.count - 1) / slices.count;
  const int64_t groups = std::max<int64_t>(1, std::min<int64_t>(wanted, n / kTileRows));
  if (slices.count == 1) {
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t g = 0; g < groups; ++g)
      at_b_slice(0, m, g * n / groups, (g + 1) * n / groups, k, a, lda, b, ldb, c, ldc, accumulate);
    return;
  }
  // Each slice into its own dense partial [n, k], then the partials in slice order.
  const Buffer partial = uninitialized(slices.count * n * k);
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if (parallel)
  for (int64_t s = 0; s < slices.count; ++s) {
    for (int64_t g = 0; g < groups; ++g) {
      at_b_slice(slices.begin(s), slices.end(s), g * n / groups, (g + 1) * n / groups, k, a, lda, b,
                 ldb, partial.get() + s * n * k, k, false);
    }
  }
  sum_partials(n, k, slices.count, partial.get(), c, ldc, accumulate,
               parallel && n * k > (1 << 14));
}

// The 1x1 convolution's backward in one pass over G (see gemm_cpu.h): per
// slice of rows (RowSlices), first grad_x's rows of the slice (G * W), then the
// slice's partial G^T * X while the slice of G is still in the L2 cache.
bool avx512_conv1x1_backward(int64_t m, int64_t n, int64_t k, const float* g, int64_t ldg,
                             const float* w, int64_t ldw, const float* x, int64_t ldx,
                             float* grad_x, int64_t ldgx, float* grad_w, int64_t ldgw,
                             const RowSource& g_rows) {
  const RowSlices slices(m);
  const int threads = omp_get_max_threads();
  if (slices.count < 2 || (threads > 1 && slices.count < 2 * threads)) return false;
  const int64_t panels = panel_count(k);
  const Buffer packed = uninitialized(panels * n * kPanelWidth);
  const Buffer partial = uninitialized(slices.count * n * k);
  // g_rows: one slice of G per thread (slices differ by at most one row).
  const int64_t slice_rows = (m + slices.count - 1) / slices.count;
  const Buffer formed = uninitialized(g == nullptr ? threads * slice_rows * n : 0);
  const Store store = store_mode(grad_x, m, ldgx, false);
#pragma omp parallel if (worth_threads(m, n, k))
  {
#pragma omp for schedule(static)
    for (int64_t p = 0; p < panels; ++p)
      pack_panel(p, k, n, w, ldw, /*b_transposed=*/false, packed.get());
#pragma omp for schedule(dynamic, 1)
    for (int64_t s = 0; s < slices.count; ++s) {
      const int64_t m0 = slices.begin(s), m1 = slices.end(s);
      // The slice's rows of G, from row 0 of `gs` (ldgs apart).
      const float* gs = g != nullptr ? g + m0 * ldg : nullptr;
      int64_t ldgs = ldg;
      if (g == nullptr) {
        float* buffer = formed.get() + omp_get_thread_num() * slice_rows * n;
        g_rows(m0, m1 - m0, buffer);
        gs = buffer;
        ldgs = n;
      }
      float* gx = grad_x + m0 * ldgx;
      for (int64_t r0 = 0; r0 < m1 - m0; r0 += kTileRows)
        rows_tile_row(r0, m1 - m0, k, n, gs, ldgs, packed.get(), gx, ldgx, store);
      at_b_slice(0, m1 - m0, 0, n, k, gs, ldgs, x + m0 * ldx, ldx, partial.get() + s * n * k, k,
                 false);
    }
    if (store == Store::stream) stream_fence();
  }
  sum_partials(n, k, slices.count, partial.get(), grad_w, ldgw, false,
               worth_threads(m, n, k) && n * k > (1 << 14));
  return true;
}

#endif  // __AVX512F__

}  // namespace

bool gemm_kernels_vectorized() {
#if defined(__AVX512F__)
  return true;
#else
  return false;
#endif
}

void gemm_rows(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
               int64_t ldb, bool b_transposed, float* c, int64_t ldc, bool accumulate,
               const OutputEpilogue<float>& epilogue) {
  if (m == 0 || n == 0) return;
#if defined(__AVX512F__)
  avx512_gemm_rows(m, n, k, a, lda, b, ldb, b_transposed, c, ldc, accumulate, epilogue);
#else
  eigen_gemm_rows(m, n, k, a, lda, b, ldb, b_transposed, c, ldc, accumulate);
  if (epilogue.active()) {  // a pass over C after Eigen's product
    for (int64_t r = 0; r < m; ++r) {
      float* row = c + r * ldc;
      for (int64_t j = 0; j < n; ++j) {
        row[j] = scale_shift_activation(epilogue.activation, row[j], epilogue.scale[j],
                                        epilogue.shift[j]);
        if (epilogue.residual != nullptr) row[j] += epilogue.residual[r * ldc + j];
      }
    }
  }
#endif
}

void gemm_at_b(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
               int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  if (n == 0 || k == 0) return;
#if defined(__AVX512F__)
  avx512_gemm_at_b(m, n, k, a, lda, b, ldb, c, ldc, accumulate);
#else
  eigen_gemm_at_b(m, n, k, a, lda, b, ldb, c, ldc, accumulate);
#endif
}

bool conv1x1_backward(int64_t m, int64_t n, int64_t k, const float* g, int64_t ldg, const float* w,
                      int64_t ldw, const float* x, int64_t ldx, float* grad_x, int64_t ldgx,
                      float* grad_w, int64_t ldgw, const RowSource& g_rows) {
#if defined(__AVX512F__)
  if (m == 0 || n == 0 || k == 0) return false;
  return avx512_conv1x1_backward(m, n, k, g, ldg, w, ldw, x, ldx, grad_x, ldgx, grad_w, ldgw,
                                 g_rows);
#else
  (void)g_rows;
  return false;
#endif
}

}  // namespace b3::cpu
