// CPU kernels of conv2d on NHWC data (see conv2d_cpu.h for the layouts):
// pointwise and general convolutions as GEMMs (im2col for the general case),
// depthwise convolutions and those with few input channels (the stem) as
// direct loops vectorized over channels.
//
// Index conventions used throughout:
//   input  element (n, iy, ix, c)  at ((n * H + iy) * W + ix) * Cin + c
//   output element (n, y, x, co)   at ((n * Ho + y) * Wo + x) * Cout + co
//   output (y, x) reads input (iy, ix) = (y * stride + ky - pad, x * stride + kx - pad).
// The im2col matrix has one row per output pixel (n, y, x) and the columns
// (g, ky, kx, ci), so group g's block is [rows, k*k*Cin/groups] at column
// g*k*k*Cin/groups; the weight is permuted to match, [Cout, k, k, Cin/groups],
// and group g's output channels are out[:, g*Cout/groups ...] = col_g x W_g^T.
#include "layers/conv2d_cpu.h"

#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "layers/gemm_cpu.h"
#include "tensor/elementwise_cpu.h"

namespace b3::cpu {

namespace {

template <typename T>
using RowMajorMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
// A row-major block of a larger row-major array: `rows` x `cols`, rows `stride` apart.
template <typename T>
using MatrixView = Eigen::Map<RowMajorMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <typename T>
using ConstMatrixView = Eigen::Map<const RowMajorMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

template <typename T>
MatrixView<T> matrix(T* data, int64_t rows, int64_t cols, int64_t stride) {
  return MatrixView<T>(data, rows, cols, Eigen::OuterStride<>(stride));
}
template <typename T>
ConstMatrixView<T> matrix(const T* data, int64_t rows, int64_t cols, int64_t stride) {
  return ConstMatrixView<T>(data, rows, cols, Eigen::OuterStride<>(stride));
}

// An uninitialized scratch buffer (im2col matrices are written in full, so
// zero-filling them first would only cost time).
template <typename T>
std::unique_ptr<T[]> scratch(int64_t count) {
  return std::unique_ptr<T[]>(new T[static_cast<size_t>(std::max<int64_t>(count, 1))]);
}

// Whether a loop over `work` multiply-adds or copies is worth a parallel
// region (forking threads costs microseconds; gradcheck's tiny convolutions
// run thousands of times).
inline bool worth_threads(int64_t work) { return work > (int64_t{1} << 15); }

// Largest im2col chunk, in elements (32 MiB of f32): big enough that each
// GEMM has thousands of rows, small enough to stay out of the way at batch 512.
constexpr int64_t kColumnBudget = int64_t{8} << 20;

// out[c] = sum over rows r of data[r * cols + c]: per-thread partial sums
// (vectorized over c), then a reduction; no races, deterministic for a given
// thread count.
template <typename T>
void sum_rows(const T* data, int64_t rows, int64_t cols, T* out) {
  const int threads = omp_get_max_threads();
  std::vector<T> partial(static_cast<size_t>(threads * cols), T(0));
#pragma omp parallel num_threads(threads) if (worth_threads(rows * cols))
  {
    T* acc = partial.data() + omp_get_thread_num() * cols;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = data + r * cols;
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) acc[c] += row[c];
    }
  }
  for (int64_t c = 0; c < cols; ++c) {
    T total = T(0);
    for (int t = 0; t < threads; ++t) total += partial[static_cast<size_t>(t * cols + c)];
    out[c] = total;
  }
}

// ------------------------------------------------------------ tap ranges --
// Along one axis, output position o reads input position o * stride + t - pad
// through kernel tap t = 0 .. k-1. These ranges replace a bounds test per tap.

// The taps [begin, end) of output position o that land inside the input,
// which they read at input position origin + t.
struct TapRange {
  int64_t begin, end, origin;
};
inline TapRange taps_inside(int64_t o, int64_t stride, int64_t padding, int64_t kernel,
                            int64_t in_size) {
  const int64_t origin = o * stride - padding;
  return {std::max<int64_t>(0, -origin), std::min<int64_t>(kernel, in_size - origin), origin};
}

// The taps that read input position i: t = first, first + stride, ... < end,
// each from output position o = (i + pad - t) / stride, which lies in [0, out_size).
struct ReverseTapRange {
  int64_t first, end, shifted;  // shifted = i + pad = o * stride + t
};
inline ReverseTapRange taps_reading(int64_t i, int64_t stride, int64_t padding, int64_t kernel,
                                    int64_t out_size) {
  const int64_t shifted = i + padding;
  const int64_t lowest = std::max<int64_t>(0, shifted - (out_size - 1) * stride);  // o < out_size
  const int64_t first = lowest + (shifted - lowest) % stride;       // t = shifted (mod stride)
  return {first, std::min<int64_t>(kernel, shifted + 1), shifted};  // o >= 0
}

// The output positions [begin, end) whose tap t lands inside the input.
struct OutputRange {
  int64_t begin, end;
};
inline OutputRange outputs_inside(int64_t t, int64_t stride, int64_t padding, int64_t in_size,
                                  int64_t out_size) {
  const int64_t shift = t - padding;  // input position = o * stride + shift
  const int64_t begin = shift >= 0 ? 0 : (-shift + stride - 1) / stride;
  const int64_t end =
      shift > in_size - 1 ? 0 : std::min<int64_t>(out_size, (in_size - 1 - shift) / stride + 1);
  return {begin, std::max(begin, end)};
}

// ------------------------------------------------------------- depthwise --
// groups == Cin == Cout: out[n, y, x, c] = bias[c] + sum_{ky, kx} w[c, ky, kx] * in[n, iy, ix, c].
// The weight is transposed to [k*k, C] so the innermost loop runs over
// contiguous channels in the input, the output and the weight alike. Channels
// go in blocks of kChannelBlock, accumulated in a local array that the
// compiler keeps in vector registers (the block width is a compile-time
// constant for every full block; a last partial block takes a runtime width).

template <typename T>
constexpr int64_t kChannelBlock = 64 / static_cast<int64_t>(sizeof(T));
template <int64_t Width>
using BlockWidth = std::integral_constant<int64_t, Width>;

// Calls block(BlockWidth<kChannelBlock>, c0, width) for each full block of
// channels from `first`, then block(BlockWidth<0>, c0, width) for the remainder.
template <typename T, typename Block>
inline void for_channel_blocks(int64_t channels, Block&& block, int64_t first = 0) {
  constexpr int64_t full = kChannelBlock<T>;
  int64_t c0 = first;
  for (; c0 + full <= channels; c0 += full) block(BlockWidth<full>{}, c0, full);
  if (c0 + full / 2 <= channels) {
    block(BlockWidth<full / 2>{}, c0, full / 2);
    c0 += full / 2;
  }
  if (c0 < channels) block(BlockWidth<0>{}, c0, channels - c0);
}

template <typename T>
std::vector<T> depthwise_weight_kkc(const Conv2dGeometry& s, const T* weight) {
  const int64_t taps = s.kernel * s.kernel, channels = s.in_channels;
  std::vector<T> out(static_cast<size_t>(taps * channels));
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t t = 0; t < taps; ++t)
      out[static_cast<size_t>(t * channels + c)] = weight[c * taps + t];
  return out;
}

// ------------------------------------------------ depthwise register tiles --
// For 3x3 and 5x5 kernels with stride 1 or 2 (all of MobileNetV3's), the
// channels that fill whole vectors (64 bytes: 16 floats, 8 doubles) and one
// half vector take register tiles along a row: kTile consecutive outputs x
// one vector of channels. A tile keeps its accumulators, the row's k weights
// and every input vector it reads in registers, and consecutive outputs share
// inputs: with stride 1, eight outputs of a 3-tap row read 10 input vectors
// instead of 24, and each weight is loaded once per tile instead of per
// output. Outputs whose taps cross the border (and a row's last few that do
// not fill a tile) take a one-output path with the exact tap range. Channels
// left over (fewer than half a vector) take the generic loops below.

// A vector of Bytes / sizeof(T) lanes of T (GCC/Clang vector extension; the
// compiler picks the instructions), with unaligned loads and stores.
template <typename T, int Bytes>
struct Lanes {
  typedef T V __attribute__((vector_size(Bytes)));
  static V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  // `stream` (whole 64-byte vectors at 64-byte aligned addresses only):
  // a non-temporal store, see elementwise_cpu.h.
  static void store(T* p, V v, bool stream = false) {
    if constexpr (Bytes == 64) {
      Vec64<T>::store(p, v, stream);
    } else {
      (void)stream;
      std::memcpy(p, &v, sizeof v);
    }
  }
  static V zero() { return V{}; }
};

// The channels covered by whole vectors and at most one half vector.
template <typename T>
int64_t vector_channels(int64_t channels) {
  constexpr int64_t full = 64 / static_cast<int64_t>(sizeof(T));
  const int64_t whole = channels / full * full;
  return channels - whole >= full / 2 ? whole + full / 2 : whole;
}

// Calls block(Bytes tag, c0) for each vector block of channels: 64-byte
// vectors, then one 32-byte vector if half a vector's channels remain.
template <typename T, typename Block>
inline void for_vector_blocks(int64_t channels, Block&& block) {
  constexpr int64_t full = 64 / static_cast<int64_t>(sizeof(T));
  int64_t c0 = 0;
  for (; c0 + full <= channels; c0 += full) block(std::integral_constant<int, 64>{}, c0);
  if (c0 + full / 2 <= channels) block(std::integral_constant<int, 32>{}, c0);
}

// The outputs [begin, end) of a row whose K taps (stride S, padding pad)
// all fall inside an input row of `in_size`.
struct InteriorRange {
  int64_t begin, end;
};
inline InteriorRange interior_outputs(int64_t kernel, int64_t stride, int64_t padding,
                                      int64_t in_size, int64_t out_size) {
  const int64_t begin = (padding + stride - 1) / stride;
  const int64_t last_start = in_size - kernel + padding;  // x * stride <= last_start
  const int64_t end = last_start >= 0 ? std::min(out_size, last_start / stride + 1) : 0;
  return {begin, std::max(begin, end)};
}

template <typename T, int K, int S>
struct DepthwiseTiles {
  static constexpr int kTile = S == 1 ? 8 : 4;       // outputs per tile
  static constexpr int kSpan = (kTile - 1) * S + K;  // input vectors a tile reads
  static constexpr bool kGather = S == 1;            // backward_input has tiles

  // One output row (n, y): out_row[x, c] for every x and the vector channels.
  static void forward(const Conv2dGeometry& s, const T* image, const T* w_kkc, const T* bias,
                      const TapRange& rows, T* out_row, bool stream) {
    const int64_t channels = s.in_channels;
    const InteriorRange inside = interior_outputs(K, S, s.padding, s.in_width, s.out_width);
    for_vector_blocks<T>(channels, [&](auto bytes, int64_t c0) {
      using L = Lanes<T, decltype(bytes)::value>;
      using V = typename L::V;
      const V b = bias ? L::load(bias + c0) : L::zero();
      int64_t x = 0;
      while (x < s.out_width) {
        if (x >= inside.begin && x + kTile <= inside.end) {
          V acc[kTile];
          for (int t = 0; t < kTile; ++t) acc[t] = b;
          for (int64_t ky = rows.begin; ky < rows.end; ++ky) {
            const T* in =
                image + ((rows.origin + ky) * s.in_width + x * S - s.padding) * channels + c0;
            V w[K], v[kSpan];
            for (int kx = 0; kx < K; ++kx) w[kx] = L::load(w_kkc + (ky * K + kx) * channels + c0);
            for (int i = 0; i < kSpan; ++i) v[i] = L::load(in + i * channels);
            for (int t = 0; t < kTile; ++t)
              for (int kx = 0; kx < K; ++kx) acc[t] += w[kx] * v[t * S + kx];
          }
          for (int t = 0; t < kTile; ++t)
            L::store(out_row + (x + t) * channels + c0, acc[t], stream);
          x += kTile;
          continue;
        }
        const TapRange cols = taps_inside(x, S, s.padding, K, s.in_width);
        V acc = b;
        for (int64_t ky = rows.begin; ky < rows.end; ++ky) {
          const T* in = image + ((rows.origin + ky) * s.in_width + cols.origin) * channels + c0;
          for (int64_t kx = cols.begin; kx < cols.end; ++kx)
            acc += L::load(w_kkc + (ky * K + kx) * channels + c0) * L::load(in + kx * channels);
        }
        L::store(out_row + x * channels + c0, acc, stream);
        ++x;
      }
    });
    if (stream) stream_fence();
  }

  // One input row iy of grad_input, every ix, the vector channels:
  // grad_in[ix] = sum over the taps (ky, kx) that reach an output of
  // w[ky, kx] * grad_out[(iy + pad - ky) / S, (ix + pad - kx) / S].
  // Stride 1: a tile of kTile inputs reads kTile + K - 1 grad_out vectors per
  // kernel row. Stride 2: an input column reads the taps of its parity; a tile
  // of kPairs (even, odd) column pairs reads kPairs + (K - 1) / 2 vectors.
  static void backward_input(const Conv2dGeometry& s, const T* gout_image, const T* w_kkc,
                             const ReverseTapRange& rows, int64_t iy, T* gin_row, bool stream) {
    const int64_t channels = s.in_channels;
    (void)iy;
    const int64_t first_y = (rows.shifted - rows.first) / S;  // y of tap ky = rows.first
    for_vector_blocks<T>(channels, [&](auto bytes, int64_t c0) {
      using L = Lanes<T, decltype(bytes)::value>;
      using V = typename L::V;
      int64_t ix = 0;
      while (ix < s.in_width) {
        if constexpr (S == 1) {
          // ix whose taps all land inside the output row: ix + pad - (K-1) >= 0, ix + pad < Wo.
          constexpr int kReach = kTile + K - 1;
          const int64_t begin = std::max<int64_t>(0, K - 1 - s.padding);
          const int64_t end = std::max(begin, std::min(s.in_width, s.out_width - s.padding));
          if (ix >= begin && ix + kTile <= end) {
            V acc[kTile];
            for (int t = 0; t < kTile; ++t) acc[t] = L::zero();
            for (int64_t ky = rows.first, y = first_y; ky < rows.end; ++ky, --y) {
              // v[u] = grad_out[y, ix + pad - (K - 1) + u]
              const T* g =
                  gout_image + (y * s.out_width + ix + s.padding - (K - 1)) * channels + c0;
              V w[K], v[kReach];
              for (int kx = 0; kx < K; ++kx) w[kx] = L::load(w_kkc + (ky * K + kx) * channels + c0);
              for (int u = 0; u < kReach; ++u) v[u] = L::load(g + u * channels);
              for (int t = 0; t < kTile; ++t)
                for (int kx = 0; kx < K; ++kx) acc[t] += w[kx] * v[t - kx + K - 1];
            }
            for (int t = 0; t < kTile; ++t)
              L::store(gin_row + (ix + t) * channels + c0, acc[t], stream);
            ix += kTile;
            continue;
          }
        } else {
          // u = ix + pad = 2q (even: taps kx = 2j read column q - j) or 2q + 1
          // (odd: kx = 2j + 1 read q - j). A tile starts at an even u = 2 q0 and
          // covers kPairs pairs; v[i] = grad_out[y, q0 - J + i].
          constexpr int kPairs = 4;
          constexpr int J = (K - 1) / 2;
          constexpr int kReach = kPairs + J;
          const int64_t u = ix + s.padding;
          const int64_t q0 = u / 2;
          if (u % 2 == 0 && q0 >= J && q0 + kPairs <= s.out_width &&
              ix + 2 * kPairs <= s.in_width) {
            V acc[2 * kPairs];
            for (int t = 0; t < 2 * kPairs; ++t) acc[t] = L::zero();
            for (int64_t ky = rows.first, y = first_y; ky < rows.end; ky += 2, --y) {
              const T* g = gout_image + (y * s.out_width + q0 - J) * channels + c0;
              V w[K], v[kReach];
              for (int kx = 0; kx < K; ++kx) w[kx] = L::load(w_kkc + (ky * K + kx) * channels + c0);
              for (int i = 0; i < kReach; ++i) v[i] = L::load(g + i * channels);
              for (int t = 0; t < kPairs; ++t) {
                for (int j = 0; 2 * j < K; ++j) acc[2 * t] += w[2 * j] * v[t + J - j];
                for (int j = 0; 2 * j + 1 < K; ++j) acc[2 * t + 1] += w[2 * j + 1] * v[t + J - j];
              }
            }
            for (int t = 0; t < 2 * kPairs; ++t)
              L::store(gin_row + (ix + t) * channels + c0, acc[t], stream);
            ix += 2 * kPairs;
            continue;
          }
        }
        const ReverseTapRange cols = taps_reading(ix, S, s.padding, K, s.out_width);
        const int64_t first_x = (cols.shifted - cols.first) / S;
        V acc = L::zero();
        for (int64_t ky = rows.first, y = first_y; ky < rows.end; ky += S, --y)
          for (int64_t kx = cols.first, x = first_x; kx < cols.end; kx += S, --x)
            acc += L::load(w_kkc + (ky * K + kx) * channels + c0) *
                   L::load(gout_image + (y * s.out_width + x) * channels + c0);
        L::store(gin_row + ix * channels + c0, acc, stream);
        ++ix;
      }
    });
    if (stream) stream_fence();
  }

  // One output row (n, y): adds sum over x of grad_out[y, x] * in[iy, x*S + kx - pad]
  // into sum[(ky*K + kx) * C + c] for the valid ky and the vector channels.
  static void backward_weight(const Conv2dGeometry& s, const T* in_image, const T* gout_row,
                              const TapRange& rows, T* sum) {
    const int64_t channels = s.in_channels;
    const InteriorRange inside = interior_outputs(K, S, s.padding, s.in_width, s.out_width);
    for_vector_blocks<T>(channels, [&](auto bytes, int64_t c0) {
      using L = Lanes<T, decltype(bytes)::value>;
      using V = typename L::V;
      for (int64_t ky = rows.begin; ky < rows.end; ++ky) {
        const T* in_row = in_image + (rows.origin + ky) * s.in_width * channels + c0;
        V acc[K];
        for (int kx = 0; kx < K; ++kx) acc[kx] = L::zero();
        int64_t x = 0;
        while (x < s.out_width) {
          if (x >= inside.begin && x + kTile <= inside.end) {
            V g[kTile], v[kSpan];
            for (int t = 0; t < kTile; ++t) g[t] = L::load(gout_row + (x + t) * channels + c0);
            const T* in = in_row + (x * S - s.padding) * channels;
            for (int i = 0; i < kSpan; ++i) v[i] = L::load(in + i * channels);
            for (int t = 0; t < kTile; ++t)
              for (int kx = 0; kx < K; ++kx) acc[kx] += g[t] * v[t * S + kx];
            x += kTile;
            continue;
          }
          const TapRange cols = taps_inside(x, S, s.padding, K, s.in_width);
          const V g = L::load(gout_row + x * channels + c0);
          // kx runs over all K (a constant index keeps acc in registers).
          for (int kx = 0; kx < K; ++kx) {
            if (kx >= cols.begin && kx < cols.end)
              acc[kx] += g * L::load(in_row + (cols.origin + kx) * channels);
          }
          ++x;
        }
        for (int kx = 0; kx < K; ++kx) {
          T* dst = sum + (ky * K + kx) * channels + c0;
          L::store(dst, L::load(dst) + acc[kx]);
        }
      }
    });
  }
};

// The tile routines for a shape, or null ones (generic loops only).
template <typename T>
struct DepthwiseTileRoutines {
  void (*forward)(const Conv2dGeometry&, const T*, const T*, const T*, const TapRange&, T*,
                  bool) = nullptr;
  void (*backward_input)(const Conv2dGeometry&, const T*, const T*, const ReverseTapRange&, int64_t,
                         T*, bool) = nullptr;
  void (*backward_weight)(const Conv2dGeometry&, const T*, const T*, const TapRange&, T*) = nullptr;
};

template <typename T>
DepthwiseTileRoutines<T> depthwise_tile_routines(const Conv2dGeometry& s) {
  DepthwiseTileRoutines<T> r;
  auto pick = [&](auto tiles) {
    using Tiles = decltype(tiles);
    r.forward = &Tiles::forward;
    r.backward_weight = &Tiles::backward_weight;
    r.backward_input = &Tiles::backward_input;
  };
  if (s.kernel == 3 && s.stride == 1) pick(DepthwiseTiles<T, 3, 1>{});
  if (s.kernel == 3 && s.stride == 2) pick(DepthwiseTiles<T, 3, 2>{});
  if (s.kernel == 5 && s.stride == 1) pick(DepthwiseTiles<T, 5, 1>{});
  if (s.kernel == 5 && s.stride == 2) pick(DepthwiseTiles<T, 5, 2>{});
  return r;
}

template <typename T>
void depthwise_forward(const Conv2dGeometry& s, const T* input, const T* weight, const T* bias,
                       T* output) {
  const int64_t channels = s.in_channels, k = s.kernel;
  const std::vector<T> taps = depthwise_weight_kkc(s, weight);
  const T* w_kkc = taps.data();
  const bool parallel = worth_threads(s.batch * s.out_height * s.out_width * channels * k * k);
  const DepthwiseTileRoutines<T> tiles = depthwise_tile_routines<T>(s);
  const int64_t c_first = tiles.forward ? vector_channels<T>(channels) : 0;
  // Large outputs with whole-vector rows are streamed (see elementwise_cpu.h).
  const bool stream = channels % Vec64<T>::lanes == 0 &&
                      use_streaming(output, s.batch * s.out_height * s.out_width * channels);
#pragma omp parallel for collapse(2) schedule(guided) if (parallel)
  for (int64_t n = 0; n < s.batch; ++n) {
    for (int64_t y = 0; y < s.out_height; ++y) {
      const TapRange rows = taps_inside(y, s.stride, s.padding, k, s.in_height);
      const T* image = input + n * s.in_height * s.in_width * channels;
      if (tiles.forward) {
        tiles.forward(s, image, w_kkc, bias, rows,
                      output + (n * s.out_height + y) * s.out_width * channels, stream);
      }
      if (c_first == channels) continue;
      for (int64_t x = 0; x < s.out_width; ++x) {
        const TapRange cols = taps_inside(x, s.stride, s.padding, k, s.in_width);
        T* out = output + ((n * s.out_height + y) * s.out_width + x) * channels;
        for_channel_blocks<T>(
            channels,
            [&](auto block_width, int64_t c0, int64_t runtime_width) {
              constexpr int64_t fixed = decltype(block_width)::value;
              const int64_t width = fixed > 0 ? fixed : runtime_width;
              T acc[kChannelBlock<T>];
              for (int64_t j = 0; j < width; ++j) acc[j] = bias ? bias[c0 + j] : T(0);
              for (int64_t ky = rows.begin; ky < rows.end; ++ky) {
                for (int64_t kx = cols.begin; kx < cols.end; ++kx) {
                  const T* in =
                      image + ((rows.origin + ky) * s.in_width + cols.origin + kx) * channels + c0;
                  const T* w = w_kkc + (ky * k + kx) * channels + c0;
                  for (int64_t j = 0; j < width; ++j) acc[j] += w[j] * in[j];
                }
              }
              for (int64_t j = 0; j < width; ++j) out[c0 + j] = acc[j];
            },
            c_first);
      }
    }
  }
}

// grad_in[n, iy, ix, c] = sum over the (y, x, ky, kx) with iy = y*stride + ky - pad
// (and likewise for x) of w[c, ky, kx] * grad_out[n, y, x, c]. Written as a
// gather over each input pixel, so threads never write the same element.
template <typename T>
void depthwise_backward_input(const Conv2dGeometry& s, const T* weight, const T* grad_output,
                              T* grad_input) {
  const int64_t channels = s.in_channels, k = s.kernel;
  const std::vector<T> taps = depthwise_weight_kkc(s, weight);
  const T* w_kkc = taps.data();
  const bool parallel = worth_threads(s.batch * s.out_height * s.out_width * channels * k * k);
  const DepthwiseTileRoutines<T> tiles = depthwise_tile_routines<T>(s);
  const int64_t c_first = tiles.backward_input ? vector_channels<T>(channels) : 0;
  const bool stream = channels % Vec64<T>::lanes == 0 &&
                      use_streaming(grad_input, s.batch * s.in_height * s.in_width * channels);
#pragma omp parallel for collapse(2) schedule(guided) if (parallel)
  for (int64_t n = 0; n < s.batch; ++n) {
    for (int64_t iy = 0; iy < s.in_height; ++iy) {
      const ReverseTapRange rows = taps_reading(iy, s.stride, s.padding, k, s.out_height);
      const T* gout_image = grad_output + n * s.out_height * s.out_width * channels;
      if (tiles.backward_input) {
        tiles.backward_input(s, gout_image, w_kkc, rows, iy,
                             grad_input + (n * s.in_height + iy) * s.in_width * channels, stream);
      }
      if (c_first == channels) continue;
      for (int64_t ix = 0; ix < s.in_width; ++ix) {
        const ReverseTapRange cols = taps_reading(ix, s.stride, s.padding, k, s.out_width);
        T* gin = grad_input + ((n * s.in_height + iy) * s.in_width + ix) * channels;
        const int64_t first_y = (rows.shifted - rows.first) / s.stride;
        const int64_t first_x = (cols.shifted - cols.first) / s.stride;
        for_channel_blocks<T>(
            channels,
            [&](auto block_width, int64_t c0, int64_t runtime_width) {
              constexpr int64_t fixed = decltype(block_width)::value;
              const int64_t width = fixed > 0 ? fixed : runtime_width;
              T acc[kChannelBlock<T>];
              for (int64_t j = 0; j < width; ++j) acc[j] = T(0);
              // Each step of ky (kx) by stride moves y (x) back by one.
              for (int64_t ky = rows.first, y = first_y; ky < rows.end; ky += s.stride, --y) {
                for (int64_t kx = cols.first, x = first_x; kx < cols.end; kx += s.stride, --x) {
                  const T* gout = gout_image + (y * s.out_width + x) * channels + c0;
                  const T* w = w_kkc + (ky * k + kx) * channels + c0;
                  for (int64_t j = 0; j < width; ++j) acc[j] += w[j] * gout[j];
                }
              }
              for (int64_t j = 0; j < width; ++j) gin[c0 + j] = acc[j];
            },
            c_first);
      }
    }
  }
}

// grad_w[c, ky, kx] = sum_{n, y, x} grad_out[n, y, x, c] * in[n, iy, ix, c].
// Per output row and tap, a register block of channels sums over the row's
// pixels; each thread adds those row sums into its own [k*k, C] buffer, and
// the buffers are summed at the end (no races).
template <typename T>
void depthwise_backward_weight(const Conv2dGeometry& s, const T* input, const T* grad_output,
                               T* grad_weight) {
  const int64_t channels = s.in_channels, k = s.kernel, taps = k * k;
  const int threads = omp_get_max_threads();
  std::vector<T> partial(static_cast<size_t>(threads * taps * channels), T(0));
  const bool parallel = worth_threads(s.batch * s.out_height * s.out_width * channels * taps);
  const DepthwiseTileRoutines<T> tiles = depthwise_tile_routines<T>(s);
  const int64_t c_first = tiles.backward_weight ? vector_channels<T>(channels) : 0;
#pragma omp parallel num_threads(threads) if (parallel)
  {
    T* thread_sum = partial.data() + omp_get_thread_num() * taps * channels;
#pragma omp for collapse(2) schedule(static)
    for (int64_t n = 0; n < s.batch; ++n) {
      for (int64_t y = 0; y < s.out_height; ++y) {
        const TapRange rows = taps_inside(y, s.stride, s.padding, k, s.in_height);
        const T* gout_row = grad_output + (n * s.out_height + y) * s.out_width * channels;
        if (tiles.backward_weight) {
          tiles.backward_weight(s, input + n * s.in_height * s.in_width * channels, gout_row, rows,
                                thread_sum);
        }
        if (c_first == channels) continue;
        for (int64_t ky = rows.begin; ky < rows.end; ++ky) {
          const T* in_row = input + (n * s.in_height + rows.origin + ky) * s.in_width * channels;
          for (int64_t kx = 0; kx < k; ++kx) {
            const OutputRange xs = outputs_inside(kx, s.stride, s.padding, s.in_width, s.out_width);
            T* sum = thread_sum + (ky * k + kx) * channels;
            for_channel_blocks<T>(
                channels,
                [&](auto block_width, int64_t c0, int64_t runtime_width) {
                  constexpr int64_t fixed = decltype(block_width)::value;
                  const int64_t width = fixed > 0 ? fixed : runtime_width;
                  T acc[kChannelBlock<T>];
                  for (int64_t j = 0; j < width; ++j) acc[j] = T(0);
                  for (int64_t x = xs.begin; x < xs.end; ++x) {
                    const T* gout = gout_row + x * channels + c0;
                    const T* in = in_row + (x * s.stride + kx - s.padding) * channels + c0;
                    for (int64_t j = 0; j < width; ++j) acc[j] += gout[j] * in[j];
                  }
                  for (int64_t j = 0; j < width; ++j) sum[c0 + j] += acc[j];
                },
                c_first);
          }
        }
      }
    }
  }
  for (int64_t t = 0; t < taps; ++t) {
    for (int64_t c = 0; c < channels; ++c) {
      T total = T(0);
      for (int th = 0; th < threads; ++th)
        total += partial[static_cast<size_t>((th * taps + t) * channels + c)];
      grad_weight[c * taps + t] = total;  // PyTorch layout [C, 1, k, k]
    }
  }
}

// ------------------------------------------ narrow input: direct loops --
// A convolution with few input channels (MobileNetV3's stem: 3 -> 16, 3x3,
// stride 2) has a thin im2col matrix (k*k*Cin = 27 columns) that costs more to
// write and read back than the arithmetic: the stem took ~7 ms forward and
// ~7 ms for its weight gradient at 224x224 batch 16, at 25-50 GFLOP/s. Here
// each output pixel's Cout values are vectors (Vec64<T>), and every tap
// (ky, kx, ci) inside the input adds one input value, broadcast, times the
// tap's weight vector; the weight is laid out [k*k*Cin, Cout] ("tap-major")
// so that vector is contiguous. The taps are added in im2col's column order
// (ky, kx, ci), after the bias, like the GEMM path.

// Narrow enough for the direct loops: at most 4 input channels and 4 vectors
// of output channels (whole vectors).
constexpr int64_t kNarrowMaxChannels = 4;
constexpr int64_t kNarrowMaxVectors = 4;

template <typename T>
bool narrow_direct(const Conv2dGeometry& s) {
  const int64_t lanes = Vec64<T>::lanes;
  return s.groups == 1 && !s.is_pointwise() && s.in_channels <= kNarrowMaxChannels &&
         s.out_channels % lanes == 0 && s.out_channels <= kNarrowMaxVectors * lanes;
}

// [Cout, Cin, k, k] -> [k, k, Cin, Cout].
template <typename T>
std::vector<T> weight_tap_major(const Conv2dGeometry& s, const T* weight) {
  const int64_t taps = s.kernel * s.kernel;
  std::vector<T> out(static_cast<size_t>(taps * s.in_channels * s.out_channels));
  for (int64_t co = 0; co < s.out_channels; ++co)
    for (int64_t ci = 0; ci < s.in_channels; ++ci)
      for (int64_t t = 0; t < taps; ++t)
        out[static_cast<size_t>((t * s.in_channels + ci) * s.out_channels + co)] =
            weight[(co * s.in_channels + ci) * taps + t];
  return out;
}

// Calls fn(Vectors, Cin) with both as compile-time constants (Cout / lanes
// in 1..kNarrowMaxVectors, Cin in 1..kNarrowMaxChannels), so that a tap's
// Cin x Vectors multiply-adds unroll and the accumulators stay in registers.
template <typename Fn>
void with_narrow_sizes(int64_t vectors, int64_t in_channels, const Fn& fn) {
  const auto with_cin = [&](auto v) {
    switch (in_channels) {
      case 1: fn(v, std::integral_constant<int, 1>{}); return;
      case 2: fn(v, std::integral_constant<int, 2>{}); return;
      case 3: fn(v, std::integral_constant<int, 3>{}); return;
      default: fn(v, std::integral_constant<int, 4>{}); return;
    }
  };
  switch (vectors) {
    case 1: with_cin(std::integral_constant<int, 1>{}); return;
    case 2: with_cin(std::integral_constant<int, 2>{}); return;
    case 3: with_cin(std::integral_constant<int, 3>{}); return;
    default: with_cin(std::integral_constant<int, 4>{}); return;
  }
}

// One output row (n, y) of the direct loops, for every x. Pixels whose taps
// all lie inside the input (a 3x3 kernel, the stem's) take an unrolled path
// with the row's weights (forward) or sums (weight gradient) in registers;
// the others loop over their taps inside the input.
template <typename T, int Vectors, int Cin>
struct NarrowRow {
  using V = typename Vec64<T>::type;
  static constexpr int64_t kLanes = Vec64<T>::lanes;
  static constexpr int kFast = 3;  // kernel size of the unrolled path

  // Calls visit(unrolled, tap, value) for every tap of output x that lies
  // inside the input, tap = (ky * k + kx) * Cin + ci (the tap-major row of
  // the weight) and value = the input there, broadcast. A 3x3 pixel inside
  // the image (`interior`) runs fully unrolled with unrolled = true_type, so
  // `tap` is a constant and the visitor can index registers with it.
  template <typename Visit>
  static void for_each_tap(const Conv2dGeometry& s, const T* image, const TapRange& rows, int64_t x,
                           bool interior, const Visit& visit) {
    if (interior) {
      const T* in = image + (rows.origin * s.in_width + x * s.stride - s.padding) * Cin;
      for (int ky = 0; ky < kFast; ++ky)
        for (int kx = 0; kx < kFast; ++kx)
          for (int ci = 0; ci < Cin; ++ci)
            visit(std::true_type{}, (ky * kFast + kx) * Cin + ci,
                  V{} + in[(ky * s.in_width + kx) * Cin + ci]);
      return;
    }
    const int64_t k = s.kernel;
    const TapRange cols = taps_inside(x, s.stride, s.padding, k, s.in_width);
    for (int64_t ky = rows.begin; ky < rows.end; ++ky) {
      for (int64_t kx = cols.begin; kx < cols.end; ++kx) {
        const T* in = image + ((rows.origin + ky) * s.in_width + cols.origin + kx) * Cin;
        for (int ci = 0; ci < Cin; ++ci)
          visit(std::false_type{}, (ky * k + kx) * Cin + ci, V{} + in[ci]);
      }
    }
  }

  // Whether the unrolled path serves this row (a 3x3 kernel whose three rows
  // lie inside the input), and its interior outputs.
  static bool unrolled_row(const Conv2dGeometry& s, const TapRange& rows) {
    return s.kernel == kFast && rows.begin == 0 && rows.end == kFast;
  }

  static void forward(const Conv2dGeometry& s, const T* image, const T* w, const T* bias,
                      const TapRange& rows, T* out_row, bool stream) {
    const int64_t cout = Vectors * kLanes;
    const InteriorRange inside =
        interior_outputs(s.kernel, s.stride, s.padding, s.in_width, s.out_width);
    const bool fast = unrolled_row(s, rows);
    V w_reg[kFast * kFast * Cin * Vectors];  // read only when fast
    if (fast) {
      for (int i = 0; i < kFast * kFast * Cin * Vectors; ++i)
        w_reg[i] = Vec64<T>::load(w + i * kLanes);
    }
    for (int64_t x = 0; x < s.out_width; ++x) {
      V acc[Vectors];
      for (int v = 0; v < Vectors; ++v) acc[v] = bias ? Vec64<T>::load(bias + v * kLanes) : V{};
      for_each_tap(s, image, rows, x, fast && x >= inside.begin && x < inside.end,
                   [&](auto unrolled, int64_t tap, V value) {
                     for (int v = 0; v < Vectors; ++v) {
                       if constexpr (decltype(unrolled)::value) {
                         acc[v] += value * w_reg[tap * Vectors + v];
                       } else {
                         acc[v] += value * Vec64<T>::load(w + (tap * Vectors + v) * kLanes);
                       }
                     }
                   });
      for (int v = 0; v < Vectors; ++v)
        Vec64<T>::store(out_row + x * cout + v * kLanes, acc[v], stream);
    }
  }

  // Adds this row's terms into sum [k*k*Cin, Cout].
  static void backward_weight(const Conv2dGeometry& s, const T* image, const T* gout_row,
                              const TapRange& rows, T* sum) {
    const int64_t cout = Vectors * kLanes;
    const InteriorRange inside =
        interior_outputs(s.kernel, s.stride, s.padding, s.in_width, s.out_width);
    const bool fast = unrolled_row(s, rows);
    V acc[kFast * kFast * Cin * Vectors];  // used only when fast
    if (fast) {
      for (int i = 0; i < kFast * kFast * Cin * Vectors; ++i) acc[i] = V{};
    }
    for (int64_t x = 0; x < s.out_width; ++x) {
      V g[Vectors];
      for (int v = 0; v < Vectors; ++v) g[v] = Vec64<T>::load(gout_row + x * cout + v * kLanes);
      for_each_tap(s, image, rows, x, fast && x >= inside.begin && x < inside.end,
                   [&](auto unrolled, int64_t tap, V value) {
                     for (int v = 0; v < Vectors; ++v) {
                       if constexpr (decltype(unrolled)::value) {
                         acc[tap * Vectors + v] += value * g[v];
                       } else {
                         T* dst = sum + (tap * Vectors + v) * kLanes;
                         Vec64<T>::store(dst, Vec64<T>::load(dst) + value * g[v], false);
                       }
                     }
                   });
    }
    if (fast) {
      for (int i = 0; i < kFast * kFast * Cin * Vectors; ++i) {
        T* dst = sum + i * kLanes;
        Vec64<T>::store(dst, Vec64<T>::load(dst) + acc[i], false);
      }
    }
  }
};

template <typename T>
void narrow_forward(const Conv2dGeometry& s, const T* input, const T* weight, const T* bias,
                    T* output) {
  constexpr int64_t lanes = Vec64<T>::lanes;
  const int64_t cout = s.out_channels, k = s.kernel;
  const std::vector<T> taps = weight_tap_major(s, weight);
  const bool stream = use_streaming(output, s.batch * s.out_height * s.out_width * cout);
  const bool parallel =
      worth_threads(s.batch * s.out_height * s.out_width * cout * k * k * s.in_channels / lanes);
  with_narrow_sizes(cout / lanes, s.in_channels, [&](auto vectors_tag, auto cin_tag) {
    using Row = NarrowRow<T, decltype(vectors_tag)::value, decltype(cin_tag)::value>;
#pragma omp parallel for collapse(2) schedule(guided) if (parallel)
    for (int64_t n = 0; n < s.batch; ++n) {
      for (int64_t y = 0; y < s.out_height; ++y) {
        Row::forward(s, input + n * s.in_height * s.in_width * s.in_channels, taps.data(), bias,
                     taps_inside(y, s.stride, s.padding, k, s.in_height),
                     output + (n * s.out_height + y) * s.out_width * cout, stream);
      }
    }
  });
  if (stream) stream_fence();
}

// grad_w[co, ci, ky, kx] = sum over output pixels of grad_out[pixel, co] *
// in[pixel's input (ky, kx), ci]. The (n, y) output rows are cut into a fixed
// number of slices (from the shape alone); each slice sums into its own
// [k*k*Cin, Cout] partial, held in the L1 cache, and the partials are added
// in slice order, so the result does not depend on the number of threads.
template <typename T>
void narrow_backward_weight(const Conv2dGeometry& s, const T* input, const T* grad_output,
                            T* grad_weight) {
  constexpr int64_t lanes = Vec64<T>::lanes;
  const int64_t cin = s.in_channels, cout = s.out_channels, k = s.kernel, taps = k * k;
  const int64_t depth = taps * cin, rows_total = s.batch * s.out_height;
  const int64_t slices = std::clamp<int64_t>(rows_total / 8, 1, 64);
  const std::unique_ptr<T[]> partial =
      scratch<T>(slices * depth * cout);  // each slice zeroes its own
  const bool parallel = worth_threads(rows_total * s.out_width * cout * depth / lanes);
  with_narrow_sizes(cout / lanes, cin, [&](auto vectors_tag, auto cin_tag) {
    using Row = NarrowRow<T, decltype(vectors_tag)::value, decltype(cin_tag)::value>;
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
    for (int64_t slice = 0; slice < slices; ++slice) {
      T* sum = partial.get() + slice * depth * cout;
      std::fill(sum, sum + depth * cout, T(0));
      for (int64_t row = slice * rows_total / slices; row < (slice + 1) * rows_total / slices;
           ++row) {
        const int64_t n = row / s.out_height, y = row % s.out_height;
        Row::backward_weight(s, input + n * s.in_height * s.in_width * cin,
                             grad_output + row * s.out_width * cout,
                             taps_inside(y, s.stride, s.padding, k, s.in_height), sum);
      }
    }
  });
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t j = 0; j < depth * cout; ++j) {
    T total = T(0);
    for (int64_t slice = 0; slice < slices; ++slice) total += partial[slice * depth * cout + j];
    const int64_t co = j % cout, tap_ci = j / cout;  // tap_ci = t * Cin + ci
    grad_weight[(co * cin + tap_ci % cin) * taps + tap_ci / cin] = total;
  }
}

// ---------------------------------------------------- im2col + GEMM path --

struct GemmGeometry {
  int64_t taps;        // k * k
  int64_t group_in;    // Cin / groups
  int64_t group_out;   // Cout / groups
  int64_t depth;       // k * k * Cin / groups: the GEMM's inner dimension
  int64_t row_length;  // groups * depth = k * k * Cin: one im2col row
  int64_t rows_per_image;
};

GemmGeometry gemm_geometry(const Conv2dGeometry& s) {
  GemmGeometry g{};
  g.taps = s.kernel * s.kernel;
  g.group_in = s.in_channels / s.groups;
  g.group_out = s.out_channels / s.groups;
  g.depth = g.taps * g.group_in;
  g.row_length = s.groups * g.depth;
  g.rows_per_image = s.out_height * s.out_width;
  return g;
}

// How many images one im2col chunk holds (all of them for a pointwise conv,
// which needs no im2col buffer).
int64_t images_per_chunk(const Conv2dGeometry& s, const GemmGeometry& g) {
  if (s.is_pointwise()) return std::max<int64_t>(s.batch, 1);
  const int64_t per_image = std::max<int64_t>(g.rows_per_image * g.row_length, 1);
  return std::clamp<int64_t>(kColumnBudget / per_image, 1, std::max<int64_t>(s.batch, 1));
}

// [Cout, Cin/g, k, k] -> [Cout, k, k, Cin/g], the column order of im2col.
template <typename T>
std::vector<T> weight_to_kkc(const Conv2dGeometry& s, const T* weight) {
  const GemmGeometry g = gemm_geometry(s);
  std::vector<T> out(static_cast<size_t>(s.out_channels * g.depth));
  for (int64_t co = 0; co < s.out_channels; ++co)
    for (int64_t ci = 0; ci < g.group_in; ++ci)
      for (int64_t t = 0; t < g.taps; ++t)
        out[static_cast<size_t>((co * g.taps + t) * g.group_in + ci)] =
            weight[(co * g.group_in + ci) * g.taps + t];
  return out;
}

// The inverse permutation, [Cout, k, k, Cin/g] -> [Cout, Cin/g, k, k].
template <typename T>
void weight_from_kkc(const Conv2dGeometry& s, const T* kkc, T* weight) {
  const GemmGeometry g = gemm_geometry(s);
  for (int64_t co = 0; co < s.out_channels; ++co)
    for (int64_t ci = 0; ci < g.group_in; ++ci)
      for (int64_t t = 0; t < g.taps; ++t)
        weight[(co * g.group_in + ci) * g.taps + t] = kkc[(co * g.taps + t) * g.group_in + ci];
}

// col[(n, y, x), (g, ky, kx, ci)] = in[first + n, iy, ix, g * Cin/groups + ci],
// zero where (iy, ix) falls in the padding; images [first, first + count).
// For one (g, ky) the taps kx = 0 .. k-1 read neighbouring input pixels and
// fill neighbouring columns, so the inside ones are one contiguous copy when
// groups == 1.
template <typename T>
void im2col(const Conv2dGeometry& s, const GemmGeometry& g, const T* input, int64_t first,
            int64_t count, T* col) {
  const int64_t k = s.kernel, channels = s.in_channels, group_in = g.group_in;
  const bool parallel = worth_threads(count * g.rows_per_image * g.row_length);
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
  for (int64_t n = 0; n < count; ++n) {
    for (int64_t y = 0; y < s.out_height; ++y) {
      const TapRange rows = taps_inside(y, s.stride, s.padding, k, s.in_height);
      const T* image = input + (first + n) * s.in_height * s.in_width * channels;
      for (int64_t x = 0; x < s.out_width; ++x) {
        const TapRange cols = taps_inside(x, s.stride, s.padding, k, s.in_width);
        T* row = col + ((n * s.out_height + y) * s.out_width + x) * g.row_length;
        for (int64_t grp = 0; grp < s.groups; ++grp) {
          for (int64_t ky = 0; ky < k; ++ky) {
            T* dst = row + grp * g.depth + ky * k * group_in;  // the k taps kx, group_in each
            if (ky < rows.begin || ky >= rows.end) {
              std::fill(dst, dst + k * group_in, T(0));
              continue;
            }
            const T* src = image + ((rows.origin + ky) * s.in_width + cols.origin) * channels +
                           grp * group_in;  // tap kx reads src + kx * channels
            std::fill(dst, dst + cols.begin * group_in, T(0));
            if (s.groups == 1) {
              std::copy(src + cols.begin * channels, src + cols.end * channels,
                        dst + cols.begin * channels);
            } else {
              for (int64_t kx = cols.begin; kx < cols.end; ++kx)
                std::copy(src + kx * channels, src + kx * channels + group_in, dst + kx * group_in);
            }
            std::fill(dst + cols.end * group_in, dst + k * group_in, T(0));
          }
        }
      }
    }
  }
}

// The adjoint of im2col: grad_in[first + n, iy, ix, :] = sum of the im2col
// entries that copied that input element. A gather over input pixels, so
// threads never write the same element.
template <typename T>
void col2im(const Conv2dGeometry& s, const GemmGeometry& g, const T* grad_col, int64_t first,
            int64_t count, T* grad_input) {
  const int64_t k = s.kernel, channels = s.in_channels;
  const bool parallel = worth_threads(count * g.rows_per_image * g.row_length);
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
  for (int64_t n = 0; n < count; ++n) {
    for (int64_t iy = 0; iy < s.in_height; ++iy) {
      const ReverseTapRange rows = taps_reading(iy, s.stride, s.padding, k, s.out_height);
      const int64_t first_y = (rows.shifted - rows.first) / s.stride;
      const T* image_col = grad_col + n * g.rows_per_image * g.row_length;
      for (int64_t ix = 0; ix < s.in_width; ++ix) {
        const ReverseTapRange cols = taps_reading(ix, s.stride, s.padding, k, s.out_width);
        const int64_t first_x = (cols.shifted - cols.first) / s.stride;
        T* gin = grad_input + (((first + n) * s.in_height + iy) * s.in_width + ix) * channels;
        for (int64_t c = 0; c < channels; ++c) gin[c] = T(0);
        // Each step of ky (kx) by stride moves y (x) back by one.
        for (int64_t ky = rows.first, y = first_y; ky < rows.end; ky += s.stride, --y) {
          for (int64_t kx = cols.first, x = first_x; kx < cols.end; kx += s.stride, --x) {
            const T* row =
                image_col + (y * s.out_width + x) * g.row_length + (ky * k + kx) * g.group_in;
            for (int64_t grp = 0; grp < s.groups; ++grp) {
              const T* src = row + grp * g.depth;
              T* dst = gin + grp * g.group_in;
#pragma omp simd
              for (int64_t ci = 0; ci < g.group_in; ++ci) dst[ci] += src[ci];
            }
          }
        }
      }
    }
  }
}

template <typename T>
void gemm_forward(const Conv2dGeometry& s, const T* input, const T* weight, const T* bias,
                  T* output) {
  const GemmGeometry g = gemm_geometry(s);
  std::vector<T> w_permuted;
  const T* w_kkc = weight;  // a 1x1 kernel's [Cout, Cin/g, 1, 1] already is the kkc order
  if (g.taps > 1) {
    w_permuted = weight_to_kkc(s, weight);
    w_kkc = w_permuted.data();
  }
  const int64_t chunk = images_per_chunk(s, g);
  std::unique_ptr<T[]> col_buffer;
  if (!s.is_pointwise()) col_buffer = scratch<T>(chunk * g.rows_per_image * g.row_length);

  for (int64_t first = 0; first < s.batch; first += chunk) {
    const int64_t count = std::min(chunk, s.batch - first);
    const int64_t rows = count * g.rows_per_image;
    const T* col = input + first * g.rows_per_image * s.in_channels;  // pointwise: the input
    if (!s.is_pointwise()) {
      im2col(s, g, input, first, count, col_buffer.get());
      col = col_buffer.get();
    }
    T* out = output + first * g.rows_per_image * s.out_channels;
    if (bias) {
#pragma omp parallel for schedule(static) if (worth_threads(rows * s.out_channels))
      for (int64_t r = 0; r < rows; ++r)
        std::copy(bias, bias + s.out_channels, out + r * s.out_channels);
    }
    for (int64_t grp = 0; grp < s.groups; ++grp) {
      // out_g [rows, Cout/g] (+)= col_g [rows, depth] x W_g^T [depth, Cout/g]
      auto out_g = matrix(out + grp * g.group_out, rows, g.group_out, s.out_channels);
      const auto col_g = matrix(col + grp * g.depth, rows, g.depth, g.row_length);
      const auto w_g = matrix(w_kkc + grp * g.group_out * g.depth, g.group_out, g.depth, g.depth);
      if constexpr (std::is_same_v<T, float>) {
        gemm_rows(rows, g.group_out, g.depth, col + grp * g.depth, g.row_length,
                  w_kkc + grp * g.group_out * g.depth, g.depth, /*b_transposed=*/true,
                  out + grp * g.group_out, s.out_channels, /*accumulate=*/bias != nullptr);
      } else if (bias) {
        out_g.noalias() += col_g * w_g.transpose();
      } else {
        out_g.noalias() = col_g * w_g.transpose();
      }
    }
  }
}

template <typename T>
void gemm_backward(const Conv2dGeometry& s, const T* input, const T* weight, const T* grad_output,
                   T* grad_input, T* grad_weight) {
  const GemmGeometry g = gemm_geometry(s);
  const int64_t chunk = images_per_chunk(s, g);
  // A 1x1 kernel's weight layout already is the kkc order: no permuted copies.
  std::vector<T> w_permuted;
  const T* w_kkc = weight;
  if (grad_input && g.taps > 1) {
    w_permuted = weight_to_kkc(s, weight);
    w_kkc = w_permuted.data();
  }
  std::vector<T> grad_w_permuted;
  T* grad_w_kkc = grad_weight;
  if (grad_weight && g.taps > 1) {
    grad_w_permuted.resize(static_cast<size_t>(s.out_channels * g.depth));
    grad_w_kkc = grad_w_permuted.data();
  }
  if constexpr (std::is_same_v<T, float>) {
    // A 1x1 convolution needing both gradients: one pass over grad_output.
    if (s.is_pointwise() && s.groups == 1 && grad_input && grad_weight &&
        conv1x1_backward(s.batch * g.rows_per_image, s.out_channels, s.in_channels, grad_output,
                         s.out_channels, weight, s.in_channels, input, s.in_channels, grad_input,
                         s.in_channels, grad_weight, s.in_channels)) {
      return;
    }
  }
  const int64_t buffer_size = chunk * g.rows_per_image * g.row_length;
  std::unique_ptr<T[]> col_buffer, grad_col_buffer;
  if (!s.is_pointwise() && grad_weight) col_buffer = scratch<T>(buffer_size);
  if (!s.is_pointwise() && grad_input) grad_col_buffer = scratch<T>(buffer_size);

  for (int64_t first = 0; first < s.batch; first += chunk) {
    const int64_t count = std::min(chunk, s.batch - first);
    const int64_t rows = count * g.rows_per_image;
    const T* gout = grad_output + first * g.rows_per_image * s.out_channels;
    if (grad_weight) {
      const T* col = input + first * g.rows_per_image * s.in_channels;
      if (!s.is_pointwise()) {
        im2col(s, g, input, first, count, col_buffer.get());
        col = col_buffer.get();
      }
      for (int64_t grp = 0; grp < s.groups; ++grp) {
        // dW_g [Cout/g, depth] (+)= grad_out_g^T [Cout/g, rows] x col_g [rows, depth]
        // (= on the first chunk, += on the others)
        auto gw_g = matrix(grad_w_kkc + grp * g.group_out * g.depth, g.group_out, g.depth, g.depth);
        const auto gout_g = matrix(gout + grp * g.group_out, rows, g.group_out, s.out_channels);
        const auto col_g = matrix(col + grp * g.depth, rows, g.depth, g.row_length);
        if constexpr (std::is_same_v<T, float>) {
          gemm_at_b(rows, g.group_out, g.depth, gout + grp * g.group_out, s.out_channels,
                    col + grp * g.depth, g.row_length, grad_w_kkc + grp * g.group_out * g.depth,
                    g.depth, /*accumulate=*/first > 0);
        } else if (first == 0) {
          gw_g.noalias() = gout_g.transpose() * col_g;
        } else {
          gw_g.noalias() += gout_g.transpose() * col_g;
        }
      }
    }
    if (grad_input) {
      // Pointwise: grad_col is grad_input itself.
      T* grad_col = s.is_pointwise() ? grad_input + first * g.rows_per_image * s.in_channels
                                     : grad_col_buffer.get();
      for (int64_t grp = 0; grp < s.groups; ++grp) {
        // dcol_g [rows, depth] = grad_out_g [rows, Cout/g] x W_g [Cout/g, depth]
        auto gcol_g = matrix(grad_col + grp * g.depth, rows, g.depth, g.row_length);
        const auto gout_g = matrix(gout + grp * g.group_out, rows, g.group_out, s.out_channels);
        const auto w_g = matrix(w_kkc + grp * g.group_out * g.depth, g.group_out, g.depth, g.depth);
        if constexpr (std::is_same_v<T, float>) {
          gemm_rows(rows, g.depth, g.group_out, gout + grp * g.group_out, s.out_channels,
                    w_kkc + grp * g.group_out * g.depth, g.depth, /*b_transposed=*/false,
                    grad_col + grp * g.depth, g.row_length, /*accumulate=*/false);
        } else {
          gcol_g.noalias() = gout_g * w_g;
        }
      }
      if (!s.is_pointwise()) col2im(s, g, grad_col, first, count, grad_input);
    }
  }
  if (grad_weight && g.taps > 1) weight_from_kkc(s, grad_w_kkc, grad_weight);
}

}  // namespace

template <typename T>
void conv2d_forward(const Conv2dGeometry& shape, const T* input, const T* weight, const T* bias,
                    T* output) {
  if (shape.is_depthwise()) {
    depthwise_forward(shape, input, weight, bias, output);
  } else if (narrow_direct<T>(shape)) {
    narrow_forward(shape, input, weight, bias, output);
  } else {
    gemm_forward(shape, input, weight, bias, output);
  }
}

template <typename T>
void conv2d_backward(const Conv2dGeometry& shape, const T* input, const T* weight,
                     const T* grad_output, T* grad_input, T* grad_weight, T* grad_bias) {
  if (grad_bias) {
    sum_rows(grad_output, shape.batch * shape.out_height * shape.out_width, shape.out_channels,
             grad_bias);
  }
  if (shape.is_depthwise()) {
    if (grad_input) depthwise_backward_input(shape, weight, grad_output, grad_input);
    if (grad_weight) depthwise_backward_weight(shape, input, grad_output, grad_weight);
  } else if (grad_weight && narrow_direct<T>(shape)) {
    narrow_backward_weight(shape, input, grad_output, grad_weight);
    if (grad_input) gemm_backward<T>(shape, input, weight, grad_output, grad_input, nullptr);
  } else if (grad_input || grad_weight) {
    gemm_backward(shape, input, weight, grad_output, grad_input, grad_weight);
  }
}

template void conv2d_forward<float>(const Conv2dGeometry&, const float*, const float*, const float*,
                                    float*);
template void conv2d_forward<double>(const Conv2dGeometry&, const double*, const double*,
                                     const double*, double*);
template void conv2d_backward<float>(const Conv2dGeometry&, const float*, const float*,
                                     const float*, float*, float*, float*);
template void conv2d_backward<double>(const Conv2dGeometry&, const double*, const double*,
                                      const double*, double*, double*, double*);

}  // namespace b3::cpu
