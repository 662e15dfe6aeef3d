// Linear's GEMMs through cuBLAS (layers/linear_cuda.h).
//
// cuBLAS is column-major; b3's matrices are row-major. A row-major [r, c]
// matrix is the column-major [c, r] matrix (its transpose) in the same bytes,
// so with primes for "the same buffer read column-major":
//   y = x W^T        <=>  y' [out, N] = W'^T [out, in] . x' [in, N]
//                          gemm(T, N, m = out, n = N, k = in; W ld in, x ld in, y ld out)
//   grad_x = g W     <=>  gx' [in, N] = W' [in, out] . g' [out, N]
//                          gemm(N, N, m = in, n = N, k = out; W ld in, g ld out, gx ld in)
//   grad_W = g^T x   <=>  gW' [in, out] = x' [in, N] . g'^T [N, out]
//                          gemm(N, T, m = in, n = out, k = N; x ld in, g ld out, gW ld in)
// The bias is added by pre-filling y with it and running the GEMM with beta = 1.
// In f16 that is done in an f32 buffer, converted to f16 at the end, so that
// the product and the bias are summed in f32 and rounded to f16 once: with an
// f16 output and beta = 1, cuBLAS 13.1 on an H200 gave 1.6% of the elements
// of a [127, 960] x [960, 1280] product errors of up to 2.5 times that one
// rounding (the size of a rounding of the product before the bias is added;
// tests/test_cuda_linear.cpp), while beta = 0 was within it.
// Built only with the CUDA backend (layers/*_cuda.cpp).
#include "layers/linear_cuda.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <climits>
#include <stdexcept>
#include <string>

#include "tensor/convert_cuda.h"
#include "tensor/cublas_check.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"

namespace b3::cuda {

namespace {

std::string describe(const LinearGeometry& g) {
  std::string text("x [");
  text += std::to_string(g.batch);
  text += ", ";
  text += std::to_string(g.in_features);
  text += "] weight [";
  text += std::to_string(g.out_features);
  text += ", ";
  text += std::to_string(g.in_features);
  text += "] ";
  text += dtype_name(g.dtype);
  return text;
}

void check_geometry(const LinearGeometry& g, const char* op) {
  const auto fail = [&](const std::string& why) {
    throw std::invalid_argument(std::string(op) + ": " + why + ", for " + describe(g));
  };
  if (g.dtype != DType::f32 && g.dtype != DType::f16) fail("dtype must be f32 or f16");
  if (g.batch < 0 || g.in_features < 0 || g.out_features < 0) fail("negative size");
  // cublasGemmEx takes int sizes and leading dimensions.
  if (g.batch > INT_MAX || g.in_features > INT_MAX || g.out_features > INT_MAX) {
    fail("a size exceeds cuBLAS's int range");
  }
}

cudaDataType_t data_type(DType dtype) { return dtype == DType::f16 ? CUDA_R_16F : CUDA_R_32F; }

// C = alpha * op(A) op(B) + beta * C, column-major, f32 accumulation; A and B
// in `dtype`, C in `c_dtype`.
void gemm(cublasHandle_t handle, cublasOperation_t trans_a, cublasOperation_t trans_b, int64_t m,
          int64_t n, int64_t k, const void* a, int64_t lda, const void* b, int64_t ldb, float beta,
          void* c, int64_t ldc, DType dtype, DType c_dtype) {
  const float alpha = 1.0f;
  const cudaDataType_t type = data_type(dtype);
  B3_CUBLAS_CHECK(cublasGemmEx(handle, trans_a, trans_b, static_cast<int>(m), static_cast<int>(n),
                               static_cast<int>(k), &alpha, a, type, static_cast<int>(lda), b, type,
                               static_cast<int>(ldb), &beta, c, data_type(c_dtype),
                               static_cast<int>(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}
void gemm(cublasHandle_t handle, cublasOperation_t trans_a, cublasOperation_t trans_b, int64_t m,
          int64_t n, int64_t k, const void* a, int64_t lda, const void* b, int64_t ldb, float beta,
          void* c, int64_t ldc, DType dtype) {
  gemm(handle, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc, dtype, dtype);
}

void zero(void* p, int64_t elements, DType dtype, const Stream& stream) {
  if (elements == 0) return;
  DeviceGuard guard(stream.device);
  B3_CUDA_CHECK(
      cudaMemsetAsync(p, 0, static_cast<size_t>(elements) * dtype_size(dtype), stream.handle));
}

void check_buffer(const void* p, int64_t elements, const char* op, const char* name) {
  if (p == nullptr && elements > 0) {
    throw std::invalid_argument(std::string(op) + ": " + name + " is null");
  }
}

}  // namespace

void linear_forward(const LinearGeometry& g, const void* x, const void* weight, const void* bias,
                    void* y, const Stream& stream) {
  const char* op = "cuda::linear_forward";
  check_geometry(g, op);
  const int64_t y_elements = g.batch * g.out_features;
  if (y_elements == 0) return;
  check_buffer(y, y_elements, op, "y");
  const bool f16_with_bias = g.dtype == DType::f16 && bias != nullptr && g.in_features > 0;
  if (bias != nullptr && !f16_with_bias) {
    if (g.dtype == DType::f16) {
      broadcast_row(static_cast<const Half*>(bias), static_cast<Half*>(y), g.batch, g.out_features,
                    stream);
    } else {
      broadcast_row(static_cast<const float*>(bias), static_cast<float*>(y), g.batch,
                    g.out_features, stream);
    }
  }
  if (g.in_features == 0) {  // an empty sum: y = bias, or 0
    if (bias == nullptr) zero(y, y_elements, g.dtype, stream);
    return;
  }
  check_buffer(x, g.batch * g.in_features, op, "x");
  check_buffer(weight, g.out_features * g.in_features, op, "weight");
  CudaContext& context = cuda::context(stream.device);
  DeviceGuard guard(stream.device);
  if (f16_with_bias) {
    // f32 sums: [out] bias in f32, then [batch, out] bias rows, the product
    // added with beta = 1, one rounding to f16 into y.
    const Allocation sums = context.allocator().allocate(
        static_cast<size_t>(g.out_features + y_elements) * sizeof(float), AllocationOptions{256, 0},
        stream.handle);
    float* bias_f32 = static_cast<float*>(sums.data);
    float* y_f32 = bias_f32 + g.out_features;
    convert(static_cast<const Half*>(bias), bias_f32, g.out_features, stream);
    broadcast_row(bias_f32, y_f32, g.batch, g.out_features, stream);
    {
      const auto lock = context.lock_library_handles();
      gemm(context.cublas(lock, stream.handle), CUBLAS_OP_T, CUBLAS_OP_N, g.out_features, g.batch,
           g.in_features, weight, g.in_features, x, g.in_features, 1.0f, y_f32, g.out_features,
           DType::f16, DType::f32);
    }
    convert(y_f32, static_cast<Half*>(y), y_elements, stream);
    return;
  }
  const auto lock = context.lock_library_handles();
  cublasHandle_t handle = context.cublas(lock, stream.handle);
  gemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, g.out_features, g.batch, g.in_features, weight,
       g.in_features, x, g.in_features, bias != nullptr ? 1.0f : 0.0f, y, g.out_features, g.dtype);
}

void linear_backward(const LinearGeometry& g, const void* x, const void* weight, const void* grad_y,
                     void* grad_x, void* grad_weight, void* grad_bias, const Stream& stream) {
  const char* op = "cuda::linear_backward";
  check_geometry(g, op);
  const int64_t n = g.batch, in = g.in_features, out = g.out_features;
  check_buffer(grad_y, n * out, op, "grad_y");
  if (grad_bias != nullptr) {
    if (g.dtype == DType::f16) {
      sum_rows(static_cast<const Half*>(grad_y), static_cast<Half*>(grad_bias), n, out, stream);
    } else {
      sum_rows(static_cast<const float*>(grad_y), static_cast<float*>(grad_bias), n, out, stream);
    }
  }
  const bool need_x = grad_x != nullptr && n * in > 0;
  const bool need_w = grad_weight != nullptr && out * in > 0;
  if (!need_x && !need_w) return;
  if (out == 0 || n == 0) {  // an empty sum over out (grad_x) or over N (grad_weight)
    if (need_x) zero(grad_x, n * in, g.dtype, stream);
    if (need_w) zero(grad_weight, out * in, g.dtype, stream);
    return;
  }
  CudaContext& context = cuda::context(stream.device);
  DeviceGuard guard(stream.device);
  const auto lock = context.lock_library_handles();
  cublasHandle_t handle = context.cublas(lock, stream.handle);
  if (need_x) {
    check_buffer(weight, out * in, op, "weight");
    gemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, weight, in, grad_y, out, 0.0f, grad_x, in,
         g.dtype);
  }
  if (need_w) {
    check_buffer(x, n * in, op, "x");
    gemm(handle, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, x, in, grad_y, out, 0.0f, grad_weight, in,
         g.dtype);
  }
}

}  // namespace b3::cuda
