// The GEMM algorithms of conv2d on the CPU (see conv2d_cpu_algorithms.h): a
// pointwise (1x1, stride 1, no padding) convolution is one GEMM per group on
// the NHWC input itself, every other one im2col + GEMM in chunks of the
// batch. The im2col matrix has one row per output pixel (n, y, x) and the
// columns (g, ky, kx, ci), so group g's block is [rows, k*k*Cin/groups] at
// column g*k*k*Cin/groups; the weight is permuted to match, [Cout, k, k,
// Cin/groups], and group g's output channels are out[:, g*Cout/groups ...] =
// col_g x W_g^T. f32 runs b3's own GEMMs (gemm_cpu.h), f64 Eigen's.
#include <Eigen/Core>
#include <type_traits>
#include <vector>

#include "layers/conv2d_cpu_algorithms.h"
#include "layers/gemm_cpu.h"

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

// Largest im2col chunk, in elements (32 MiB of f32): big enough that each
// GEMM has thousands of rows, small enough to stay out of the way at batch 512.
constexpr int64_t kColumnBudget = int64_t{8} << 20;

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

}  // namespace

template <typename T>
void gemm_forward(const Conv2dGeometry& s, const T* input, const T* weight, const T* bias,
                  T* output, const OutputEpilogue<T>& epilogue) {
  // f32 with one group: gemm_rows applies the epilogue as it stores each tile.
  const bool epilogue_in_gemm = std::is_same_v<T, float> && s.groups == 1;
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
                  out + grp * g.group_out, s.out_channels, /*accumulate=*/bias != nullptr,
                  epilogue_in_gemm ? epilogue.at(first * g.rows_per_image * s.out_channels, 0)
                                   : OutputEpilogue<T>{});
      } else if (bias) {
        out_g.noalias() += col_g * w_g.transpose();
      } else {
        out_g.noalias() = col_g * w_g.transpose();
      }
    }
    if (epilogue.active() && !epilogue_in_gemm) {
      apply_epilogue(out, rows, s.out_channels,
                     epilogue.at(first * g.rows_per_image * s.out_channels, 0));
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

template <typename T>
bool pointwise_backward_from_rows(const Conv2dGeometry& s, const T* input, const T* weight,
                                  const InputReplay& grad_output_rows, T* grad_input,
                                  T* grad_weight) {
  if constexpr (std::is_same_v<T, float>) {
    if (!s.is_pointwise() || s.groups != 1 || grad_input == nullptr || grad_weight == nullptr ||
        input == nullptr) {
      return false;
    }
    const RowSource rows = [&grad_output_rows](int64_t first, int64_t count, float* out) {
      grad_output_rows(first, count, out);
    };
    return conv1x1_backward(s.batch * s.in_height * s.in_width, s.out_channels, s.in_channels,
                            nullptr, s.out_channels, weight, s.in_channels, input, s.in_channels,
                            grad_input, s.in_channels, grad_weight, s.in_channels, rows);
  } else {
    (void)s, (void)input, (void)weight, (void)grad_output_rows, (void)grad_input, (void)grad_weight;
    return false;
  }
}

template void gemm_forward<float>(const Conv2dGeometry&, const float*, const float*, const float*,
                                  float*, const OutputEpilogue<float>&);
template void gemm_backward<float>(const Conv2dGeometry&, const float*, const float*, const float*,
                                   float*, float*);
template void gemm_forward<double>(const Conv2dGeometry&, const double*, const double*,
                                   const double*, double*, const OutputEpilogue<double>&);
template bool pointwise_backward_from_rows<float>(const Conv2dGeometry&, const float*, const float*,
                                                  const InputReplay&, float*, float*);
template bool pointwise_backward_from_rows<double>(const Conv2dGeometry&, const double*,
                                                   const double*, const InputReplay&, double*,
                                                   double*);
template void gemm_backward<double>(const Conv2dGeometry&, const double*, const double*,
                                    const double*, double*, double*);

}  // namespace b3::cpu
