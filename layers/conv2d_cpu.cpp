// conv2d's CPU kernels (see conv2d_cpu.h): the choice among the four
// algorithms (conv2d_cpu_algorithms.h, one file each) and the bias gradient.
//
// Index conventions used throughout:
//   input  element (n, iy, ix, c)  at ((n * H + iy) * W + ix) * Cin + c
//   output element (n, y, x, co)   at ((n * Ho + y) * Wo + x) * Cout + co
//   output (y, x) reads input (iy, ix) = (y * stride + ky - pad, x * stride + kx - pad).
#include "layers/conv2d_cpu.h"

#include <omp.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "layers/conv2d_cpu_algorithms.h"

namespace b3::cpu {

namespace {

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

void check_nhwc(const Conv2dGeometry& g, const char* op) {
  if (g.format != MemoryFormat::channels_last) {
    throw std::invalid_argument(std::string(op) + ": the CPU kernels take NHWC data, got " +
                                g.str());
  }
}

}  // namespace

Conv2dCpuAlgorithm conv2d_cpu_algorithm(const Conv2dGeometry& g) {
  if (g.is_depthwise()) return Conv2dCpuAlgorithm::depthwise;
  const bool narrow = g.dtype == DType::f64 ? narrow_direct<double>(g) : narrow_direct<float>(g);
  if (narrow) return Conv2dCpuAlgorithm::narrow_direct;
  return g.is_pointwise() ? Conv2dCpuAlgorithm::pointwise_gemm : Conv2dCpuAlgorithm::im2col_gemm;
}

const char* conv2d_cpu_algorithm_name(Conv2dCpuAlgorithm algorithm) {
  switch (algorithm) {
    case Conv2dCpuAlgorithm::pointwise_gemm: return "1x1 gemm";
    case Conv2dCpuAlgorithm::im2col_gemm: return "im2col gemm";
    case Conv2dCpuAlgorithm::depthwise: return "depthwise";
    case Conv2dCpuAlgorithm::narrow_direct: return "narrow direct";
  }
  return "?";
}

template <typename T>
void conv2d_forward(const Conv2dGeometry& g, const T* input, const T* weight, const T* bias,
                    T* output, const OutputEpilogue<T>& epilogue) {
  check_nhwc(g, "cpu::conv2d_forward");
  switch (conv2d_cpu_algorithm(g)) {
    case Conv2dCpuAlgorithm::depthwise:
      depthwise_forward(g, input, weight, bias, output, epilogue);
      return;
    case Conv2dCpuAlgorithm::narrow_direct:
      narrow_forward(g, input, weight, bias, output, epilogue);
      return;
    case Conv2dCpuAlgorithm::pointwise_gemm:
    case Conv2dCpuAlgorithm::im2col_gemm:
      gemm_forward(g, input, weight, bias, output, epilogue);
      return;
  }
}

template <typename T>
void conv2d_backward(const Conv2dGeometry& g, const T* input, const T* weight, const T* grad_output,
                     T* grad_input, T* grad_weight, T* grad_bias, const InputReplay& input_replay,
                     const InputReplay& grad_output_rows) {
  check_nhwc(g, "cpu::conv2d_backward");
  const Conv2dCpuAlgorithm algorithm = conv2d_cpu_algorithm(g);
  std::unique_ptr<T[]> formed;  // dL/d(output) from grad_output_rows, when formed whole
  if (grad_output == nullptr) {
    if (!grad_output_rows) {
      throw std::logic_error("cpu::conv2d_backward: neither grad_output nor its rows, " + g.str());
    }
    if (grad_bias == nullptr &&
        pointwise_backward_from_rows(g, input, weight, grad_output_rows, grad_input, grad_weight)) {
      return;
    }
    // Whole, in chunks of rows shared between the threads (each row's
    // values do not depend on the chunk).
    const int64_t rows = g.batch * g.out_height * g.out_width;
    const int64_t chunk_rows = std::max<int64_t>(1, (int64_t{1} << 14) / g.out_channels);
    const int64_t chunks = (rows + chunk_rows - 1) / chunk_rows;
    formed = scratch<T>(rows * g.out_channels);
    T* out = formed.get();
#pragma omp parallel for schedule(dynamic, 1) if (worth_threads(rows * g.out_channels))
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t first = c * chunk_rows;
      grad_output_rows(first, std::min(chunk_rows, rows - first), out + first * g.out_channels);
    }
    grad_output = formed.get();
  }
  if (grad_weight && input == nullptr &&
      !(input_replay && algorithm == Conv2dCpuAlgorithm::depthwise)) {
    throw std::logic_error(std::string("cpu::conv2d_backward: the weight gradient of the ") +
                           conv2d_cpu_algorithm_name(algorithm) +
                           " algorithm needs the input (a replay serves only the depthwise one), " +
                           g.str());
  }
  if (grad_bias)
    sum_rows(grad_output, g.batch * g.out_height * g.out_width, g.out_channels, grad_bias);
  switch (algorithm) {
    case Conv2dCpuAlgorithm::depthwise:
      if (grad_input) depthwise_backward_input(g, weight, grad_output, grad_input);
      if (grad_weight) depthwise_backward_weight(g, input, input_replay, grad_output, grad_weight);
      return;
    case Conv2dCpuAlgorithm::narrow_direct:
      // The direct loops make the weight gradient; the input gradient (which
      // MobileNetV3's stem never needs) takes the GEMM path.
      if (grad_weight) narrow_backward_weight(g, input, grad_output, grad_weight);
      if (grad_input) gemm_backward<T>(g, input, weight, grad_output, grad_input, nullptr);
      return;
    case Conv2dCpuAlgorithm::pointwise_gemm:
    case Conv2dCpuAlgorithm::im2col_gemm:
      if (grad_input || grad_weight) {
        gemm_backward(g, input, weight, grad_output, grad_input, grad_weight);
      }
      return;
  }
}

template void conv2d_forward<float>(const Conv2dGeometry&, const float*, const float*, const float*,
                                    float*, const OutputEpilogue<float>&);
template void conv2d_forward<double>(const Conv2dGeometry&, const double*, const double*,
                                     const double*, double*, const OutputEpilogue<double>&);
template void conv2d_backward<float>(const Conv2dGeometry&, const float*, const float*,
                                     const float*, float*, float*, float*, const InputReplay&,
                                     const InputReplay&);
template void conv2d_backward<double>(const Conv2dGeometry&, const double*, const double*,
                                      const double*, double*, double*, double*, const InputReplay&,
                                      const InputReplay&);

}  // namespace b3::cpu
