// CPU kernels of Linear (see linear_cpu.h): three Eigen GEMMs over row-major
// maps of the dense buffers, plus column sums for the bias gradient. Eigen is
// included here only.
#include "layers/linear_cpu.h"

#include <Eigen/Core>

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

}  // namespace

template <typename T>
void linear_forward(const LinearGeometry& g, const T* x, const T* weight, const T* bias, T* y) {
  MatrixMap<T> out(y, g.batch, g.out_features);
  out.noalias() = ConstMatrixMap<T>(x, g.batch, g.in_features) *
                  ConstMatrixMap<T>(weight, g.out_features, g.in_features).transpose();  // x W^T
  if (bias != nullptr) out.rowwise() += ConstVectorMap<T>(bias, g.out_features);
}

template <typename T>
void linear_backward(const LinearGeometry& g, const T* x, const T* weight, const T* grad_y,
                     T* grad_x, T* grad_weight, T* grad_bias) {
  const ConstMatrixMap<T> gy(grad_y, g.batch, g.out_features);
  if (grad_x != nullptr) {
    MatrixMap<T>(grad_x, g.batch, g.in_features).noalias() =
        gy * ConstMatrixMap<T>(weight, g.out_features, g.in_features);
  }
  if (grad_weight != nullptr) {
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
