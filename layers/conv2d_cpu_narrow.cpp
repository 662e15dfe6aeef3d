// The narrow-input algorithm of conv2d on the CPU (see
// conv2d_cpu_algorithms.h): direct loops for convolutions with few input
// channels, MobileNetV3's stem above all.
//
// A convolution with few input channels (MobileNetV3's stem: 3 -> 16, 3x3,
// stride 2) has a thin im2col matrix (k*k*Cin = 27 columns) that costs more to
// write and read back than the arithmetic: the stem took ~7 ms forward and
// ~7 ms for its weight gradient at 224x224 batch 16, at 25-50 GFLOP/s. Here
// each output pixel's Cout values are vectors (Vec64<T>), and every tap
// (ky, kx, ci) inside the input adds one input value, broadcast, times the
// tap's weight vector; the weight is laid out [k*k*Cin, Cout] ("tap-major")
// so that vector is contiguous. The taps are added in im2col's column order
// (ky, kx, ci), after the bias, like the GEMM path.
#include <omp.h>

#include <type_traits>
#include <vector>

#include "layers/conv2d_cpu_algorithms.h"

namespace b3::cpu {

namespace {

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
                      const TapRange& rows, T* out_row, bool stream,
                      const OutputEpilogue<T>& epilogue) {
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
      for (int v = 0; v < Vectors; ++v) {
        const int64_t offset = x * cout + v * kLanes;
        V value = acc[v];
        if (epilogue.active()) {  // as the convolution stores (conv2d_cpu.h)
          value = scale_shift_activation(epilogue.activation, value,
                                         Vec64<T>::load(epilogue.scale + v * kLanes),
                                         Vec64<T>::load(epilogue.shift + v * kLanes));
          if (epilogue.residual != nullptr) value += Vec64<T>::load(epilogue.residual + offset);
        }
        Vec64<T>::store(out_row + offset, value, stream);
      }
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

}  // namespace

template <typename T>
void narrow_forward(const Conv2dGeometry& s, const T* input, const T* weight, const T* bias,
                    T* output, const OutputEpilogue<T>& epilogue) {
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
        const int64_t row_offset = (n * s.out_height + y) * s.out_width * cout;
        Row::forward(s, input + n * s.in_height * s.in_width * s.in_channels, taps.data(), bias,
                     taps_inside(y, s.stride, s.padding, k, s.in_height), output + row_offset,
                     stream, epilogue.at(row_offset, 0));
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

template void narrow_forward<float>(const Conv2dGeometry&, const float*, const float*, const float*,
                                    float*, const OutputEpilogue<float>&);
template void narrow_backward_weight<float>(const Conv2dGeometry&, const float*, const float*,
                                            float*);
template void narrow_forward<double>(const Conv2dGeometry&, const double*, const double*,
                                     const double*, double*, const OutputEpilogue<double>&);
template void narrow_backward_weight<double>(const Conv2dGeometry&, const double*, const double*,
                                             double*);

}  // namespace b3::cpu
