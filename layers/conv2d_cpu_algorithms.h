// What the four CPU algorithms of conv2d share (one .cpp each, all on NHWC
// data; see conv2d_cpu.h): the index arithmetic of kernel taps along one
// axis, when a loop is worth threads, scratch buffers, and each algorithm's
// entry points, which conv2d_cpu.cpp dispatches to:
//   conv2d_cpu_gemm.cpp       pointwise (1x1) and im2col + GEMM
//   conv2d_cpu_depthwise.cpp  depthwise, direct loops vectorized over channels
//   conv2d_cpu_narrow.cpp     few input channels (the stem), direct loops
// Each is instantiated for float and double in its own file.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>

#include "layers/conv2d.h"
#include "layers/conv2d_cpu.h"
#include "layers/normalized_activation_cpu.h"
#include "tensor/elementwise_cpu.h"

namespace b3::cpu {

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

// The epilogue as a pass over `rows` rows of `channels` output values, in
// place: for the algorithms that do not apply it as they store.
template <typename T>
void apply_epilogue(T* out, int64_t rows, int64_t channels, const OutputEpilogue<T>& e) {
#pragma omp parallel for schedule(static) if (worth_threads(rows * channels))
  for (int64_t r = 0; r < rows; ++r) {
    T* row = out + r * channels;
    for (int64_t c = 0; c < channels; ++c) {
      row[c] = scale_shift_activation(e.activation, row[c], e.scale[c], e.shift[c]);
      if (e.residual != nullptr) row[c] += e.residual[r * channels + c];
    }
  }
}

// ------------------------------------------------------------- algorithms --

// depthwise (groups == Cin == Cout): out[n, y, x, c] = bias[c] + sum_{ky, kx}
// w[c, ky, kx] * in[n, iy, ix, c]; the backward writes grad_input or
// grad_weight (overwritten). The weight gradient reads `input`, or when it
// is null the images `input_replay` writes.
template <typename T>
void depthwise_forward(const Conv2dGeometry& s, const T* input, const T* weight, const T* bias,
                       T* output, const OutputEpilogue<T>& epilogue);
template <typename T>
void depthwise_backward_input(const Conv2dGeometry& s, const T* weight, const T* grad_output,
                              T* grad_input);
template <typename T>
void depthwise_backward_weight(const Conv2dGeometry& s, const T* input,
                               const InputReplay& input_replay, const T* grad_output,
                               T* grad_weight);

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

// The direct loops for narrow_direct shapes: the forward, and the weight
// gradient (the input gradient of such a convolution takes the GEMM path).
template <typename T>
void narrow_forward(const Conv2dGeometry& s, const T* input, const T* weight, const T* bias,
                    T* output, const OutputEpilogue<T>& epilogue);
template <typename T>
void narrow_backward_weight(const Conv2dGeometry& s, const T* input, const T* grad_output,
                            T* grad_weight);

// Every other convolution: pointwise ones as GEMMs on the input itself, the
// rest im2col + GEMM; the backward writes whichever of grad_input and
// grad_weight is not null.
template <typename T>
void gemm_forward(const Conv2dGeometry& s, const T* input, const T* weight, const T* bias,
                  T* output, const OutputEpilogue<T>& epilogue);
template <typename T>
void gemm_backward(const Conv2dGeometry& s, const T* input, const T* weight, const T* grad_output,
                   T* grad_input, T* grad_weight);
// A 1x1 convolution's two gradients with dL/d(output) formed slice by slice
// by `grad_output_rows` (f32, one group, both gradients wanted, enough rows
// for conv1x1_backward's slices); false, doing nothing, otherwise.
template <typename T>
bool pointwise_backward_from_rows(const Conv2dGeometry& s, const T* input, const T* weight,
                                  const InputReplay& grad_output_rows, T* grad_input,
                                  T* grad_weight);

}  // namespace b3::cpu
