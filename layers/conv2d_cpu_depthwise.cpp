// The depthwise algorithm of conv2d on the CPU (see conv2d_cpu_algorithms.h):
// direct loops over NHWC data vectorized over channels, with register tiles
// for the 3x3 and 5x5 kernels MobileNetV3 uses.
#include <omp.h>

#include <cstring>
#include <type_traits>
#include <vector>

#include "layers/conv2d_cpu_algorithms.h"

namespace b3::cpu {

namespace {

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

template <typename T, int K, int S>
struct DepthwiseTiles {
  static constexpr int kTile = S == 1 ? 8 : 4;       // outputs per tile
  static constexpr int kSpan = (kTile - 1) * S + K;  // input vectors a tile reads
  static constexpr bool kGather = S == 1;            // backward_input has tiles

  // One output row (n, y): out_row[x, c] for every x and the vector channels.
  static void forward(const Conv2dGeometry& s, const T* image, const T* w_kkc, const T* bias,
                      const TapRange& rows, T* out_row, bool stream,
                      const OutputEpilogue<T>& epilogue) {
    const int64_t channels = s.in_channels;
    const InteriorRange inside = interior_outputs(K, S, s.padding, s.in_width, s.out_width);
    for_vector_blocks<T>(channels, [&](auto bytes, int64_t c0) {
      using L = Lanes<T, decltype(bytes)::value>;
      using V = typename L::V;
      const V b = bias ? L::load(bias + c0) : L::zero();
      const bool finish = epilogue.active();
      const V scale = finish ? L::load(epilogue.scale + c0) : L::zero();
      const V shift = finish ? L::load(epilogue.shift + c0) : L::zero();
      // The value stored for the sum at out_row[offset]: the epilogue's,
      // when there is one (epilogue.residual is this row's).
      auto result = [&](V acc, int64_t offset) {
        if (!finish) return acc;
        const V v = scale_shift_activation(epilogue.activation, acc, scale, shift);
        return epilogue.residual != nullptr ? v + L::load(epilogue.residual + offset) : v;
      };
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
          for (int t = 0; t < kTile; ++t) {
            const int64_t offset = (x + t) * channels + c0;
            L::store(out_row + offset, result(acc[t], offset), stream);
          }
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
        L::store(out_row + x * channels + c0, result(acc, x * channels + c0), stream);
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
  void (*forward)(const Conv2dGeometry&, const T*, const T*, const T*, const TapRange&, T*, bool,
                  const OutputEpilogue<T>&) = nullptr;
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

}  // namespace

template <typename T>
void depthwise_forward(const Conv2dGeometry& s, const T* input, const T* weight, const T* bias,
                       T* output, const OutputEpilogue<T>& epilogue) {
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
      const int64_t row_offset = (n * s.out_height + y) * s.out_width * channels;
      const OutputEpilogue<T> row_epilogue = epilogue.at(row_offset, 0);
      if (tiles.forward) {
        tiles.forward(s, image, w_kkc, bias, rows, output + row_offset, stream, row_epilogue);
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
              if (epilogue.active()) {
                for (int64_t j = 0; j < width; ++j) {
                  out[c0 + j] = scale_shift_activation(
                      epilogue.activation, acc[j], epilogue.scale[c0 + j], epilogue.shift[c0 + j]);
                  if (epilogue.residual != nullptr)
                    out[c0 + j] += row_epilogue.residual[x * channels + c0 + j];
                }
              } else {
                for (int64_t j = 0; j < width; ++j) out[c0 + j] = acc[j];
              }
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
// the buffers are summed at the end (no races). Without `input`, a thread
// replays image n into its one-image buffer when its rows reach a new image
// (the rows of a thread's share are consecutive, so each image once, or
// twice where the two shares meet): the same sums in the same order.
template <typename T>
void depthwise_backward_weight(const Conv2dGeometry& s, const T* input,
                               const InputReplay& input_replay, const T* grad_output,
                               T* grad_weight) {
  const int64_t channels = s.in_channels, k = s.kernel, taps = k * k;
  const int64_t image_elements = s.in_height * s.in_width * channels;
  const int threads = omp_get_max_threads();
  std::vector<T> partial(static_cast<size_t>(threads * taps * channels), T(0));
  const bool parallel = worth_threads(s.batch * s.out_height * s.out_width * channels * taps);
  const DepthwiseTileRoutines<T> tiles = depthwise_tile_routines<T>(s);
  const int64_t c_first = tiles.backward_weight ? vector_channels<T>(channels) : 0;
  std::unique_ptr<T[]> replay_buffers;
  if (input == nullptr) replay_buffers = scratch<T>(threads * image_elements);
#pragma omp parallel num_threads(threads) if (parallel)
  {
    T* thread_sum = partial.data() + omp_get_thread_num() * taps * channels;
    T* replayed =
        input == nullptr ? replay_buffers.get() + omp_get_thread_num() * image_elements : nullptr;
    int64_t replayed_image = -1;
#pragma omp for collapse(2) schedule(static)
    for (int64_t n = 0; n < s.batch; ++n) {
      for (int64_t y = 0; y < s.out_height; ++y) {
        if (replayed != nullptr && replayed_image != n) {
          input_replay(n, 1, replayed);
          replayed_image = n;
        }
        const T* image = replayed != nullptr ? replayed : input + n * image_elements;
        const TapRange rows = taps_inside(y, s.stride, s.padding, k, s.in_height);
        const T* gout_row = grad_output + (n * s.out_height + y) * s.out_width * channels;
        if (tiles.backward_weight) tiles.backward_weight(s, image, gout_row, rows, thread_sum);
        if (c_first == channels) continue;
        for (int64_t ky = rows.begin; ky < rows.end; ++ky) {
          const T* in_row = image + (rows.origin + ky) * s.in_width * channels;
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

template void depthwise_forward<float>(const Conv2dGeometry&, const float*, const float*,
                                       const float*, float*, const OutputEpilogue<float>&);
template void depthwise_backward_input<float>(const Conv2dGeometry&, const float*, const float*,
                                              float*);
template void depthwise_backward_weight<float>(const Conv2dGeometry&, const float*,
                                               const InputReplay&, const float*, float*);
template void depthwise_forward<double>(const Conv2dGeometry&, const double*, const double*,
                                        const double*, double*, const OutputEpilogue<double>&);
template void depthwise_backward_input<double>(const Conv2dGeometry&, const double*, const double*,
                                               double*);
template void depthwise_backward_weight<double>(const Conv2dGeometry&, const double*,
                                                const InputReplay&, const double*, double*);

}  // namespace b3::cpu
