// CPU kernels of Linear (see linear_cpu.h): three GEMMs over the dense
// row-major buffers, plus column sums for the bias gradient. f32 runs on the
// register-blocked kernels of gemm_cpu.h where they are compiled in (AVX-512:
// 1.1-1.3x Eigen's FLOP/s at MobileNetV3's classifier shapes), f64 and other
// CPUs on Eigen's, which is included here only.
#include "layers/linear_cpu.h"

#include <Eigen/Core>
#include <algorithm>
#include <type_traits>

#include "layers/gemm_cpu.h"

namespace b3::cpu {

namespace {

template <typename T>
using RowMajorMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using MatrixMap = Eigen::Map<RowMajorMatrix<T>>;
template <typename T>
using ConstMatrixMap = Eigen::Map<const RowMajorMatrix<T>>;
template <typename T>
using VectorMap = Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>>;
template <typename T>
using ConstVectorMap = Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>;

// The f32 products on gemm_cpu.h's kernels; false (doing nothing) where they
// are not compiled in.
bool own_kernel_forward(const LinearGeometry& g, const float* x, const float* weight,
                        const float* bias, float* y) {
  if (!gemm_kernels_vectorized()) return false;
  // y = bias (per row), then y += x W^T: W [out, in] is op(B), transposed.
  if (bias != nullptr) {
    for (int64_t r = 0; r < g.batch; ++r)
      std::copy(bias, bias + g.out_features, y + r * g.out_features);
  }
  gemm_rows(g.batch, g.out_features, g.in_features, x, g.in_features, weight, g.in_features,
            /*b_transposed=*/true, y, g.out_features, /*accumulate=*/bias != nullptr);
  return true;
}

bool own_kernel_backward(const LinearGeometry& g, const float* x, const float* weight,
                         const float* grad_y, float* grad_x, float* grad_weight) {
  if (!gemm_kernels_vectorized()) return false;
  if (grad_x != nullptr) {  // grad_x [batch, in] = g [batch, out] W [out, in]
    gemm_rows(g.batch, g.in_features, g.out_features, grad_y, g.out_features, weight, g.in_features,
              /*b_transposed=*/false, grad_x, g.in_features, /*accumulate=*/false);
  }
  if (grad_weight != nullptr) {  // grad_weight [out, in] = g^T x, a sum over the batch
    gemm_at_b(g.batch, g.out_features, g.in_features, grad_y, g.out_features, x, g.in_features,
              grad_weight, g.in_features, /*accumulate=*/false);
  }
  return true;
}

}  // namespace

template <typename T>
void linear_forward(const LinearGeometry& g, const T* x, const T* weight, const T* bias, T* y) {
  if constexpr (std::is_same_v<T, float>) {
    if (own_kernel_forward(g, x, weight, bias, y)) return;
  }
  MatrixMap<T> out(y, g.batch, g.out_features);
  out.noalias() = ConstMatrixMap<T>(x, g.batch, g.in_features) *
                  ConstMatrixMap<T>(weight, g.out_features, g.in_features).transpose();  // x W^T
  if (bias != nullptr) out.rowwise() += ConstVectorMap<T>(bias, g.out_features);
}

template <typename T>
void linear_backward(const LinearGeometry& g, const T* x, const T* weight, const T* grad_y,
                     T* grad_x, T* grad_weight, T* grad_bias) {
  const ConstMatrixMap<T> gy(grad_y, g.batch, g.out_features);
  bool done = false;
  if constexpr (std::is_same_v<T, float>) {
    done = own_kernel_backward(g, x, weight, grad_y, grad_x, grad_weight);
  }
  if (!done && grad_x != nullptr) {
    MatrixMap<T>(grad_x, g.batch, g.in_features).noalias() =
        gy * ConstMatrixMap<T>(weight, g.out_features, g.in_features);
  }
  if (!done && grad_weight != nullptr) {
    MatrixMap<T>(grad_weight, g.out_features, g.in_features).noalias() =
        gy.transpose() * ConstMatrixMap<T>(x, g.batch, g.in_features);
  }
  if (grad_bias != nullptr) VectorMap<T>(grad_bias, g.out_features) = gy.colwise().sum();
}

template void linear_forward<float>(const LinearGeometry&, const float*, const float*, const float*,
                                    float*);
template void linear_forward<double>(const LinearGeometry&, const double*, const double*,
                                     const double*, double*);
template void linear_backward<float>(const LinearGeometry&, const float*, const float*,
                                     const float*, float*, float*, float*);
template void linear_backward<double>(const LinearGeometry&, const double*, const double*,
                                      const double*, double*, double*, double*);

}  // namespace b3::cpu
