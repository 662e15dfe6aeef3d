// CPU kernels of Linear: three Eigen GEMMs over row-major maps of the dense
// tensors (Eigen parallelizes its GEMM with OpenMP), plus column sums for the
// bias gradient. Eigen is included here only.
#include <Eigen/Core>

#include "layers/linear.h"

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

template <typename T>
ConstMatrixMap<T> as_matrix(const Tensor& t) {
  return ConstMatrixMap<T>(t.data<T>(), t.size(0), t.size(1));
}
template <typename T>
MatrixMap<T> as_matrix(Tensor& t) {
  return MatrixMap<T>(t.data<T>(), t.size(0), t.size(1));
}

}  // namespace

void linear_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& out) {
  dispatch_float(x.dtype(), "linear", [&](auto tag) {
    using T = decltype(tag);
    auto y = as_matrix<T>(out);
    y.noalias() = as_matrix<T>(x) * as_matrix<T>(weight).transpose();  // x W^T
    if (bias.defined()) y.rowwise() += ConstVectorMap<T>(bias.data<T>(), bias.numel());
  });
}

void linear_backward(const Tensor& grad_out, const Tensor& x, const Tensor& weight,
                     Tensor& grad_input, Tensor& grad_weight, Tensor& grad_bias) {
  dispatch_float(x.dtype(), "linear backward", [&](auto tag) {
    using T = decltype(tag);
    const auto g = as_matrix<T>(grad_out);
    if (grad_input.defined()) as_matrix<T>(grad_input).noalias() = g * as_matrix<T>(weight);
    if (grad_weight.defined())
      as_matrix<T>(grad_weight).noalias() = g.transpose() * as_matrix<T>(x);
    if (grad_bias.defined()) {
      VectorMap<T>(grad_bias.data<T>(), grad_bias.numel()) = g.colwise().sum();
    }
  });
}

}  // namespace b3::cpu
