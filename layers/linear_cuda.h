// Linear (layers/linear.h, as torch.nn.functional.linear) on CUDA through
// cuBLAS, on raw device memory, all dense row-major:
//   x [N, in], weight [out, in], bias [out], y [N, out]
//   forward:  y = x W^T + b
//   backward: grad_x = g W, grad_weight = g^T x, grad_bias = column sums of g
// f16 tensors are multiplied with f32 accumulation (cublasGemmEx with
// CUBLAS_COMPUTE_32F; reduced-precision reductions are disallowed on b3's
// handle) and Tensor Cores; f32 tensors use plain f32 (no TF32), so they can
// be checked against the CPU at 1e-5. Outputs are overwritten.
// Defined in linear_cuda.cpp (GEMMs) and linear_bias_cuda.cu (bias kernels).
#pragma once

#include <cstdint>

#include "layers/linear.h"
#include "tensor/cuda_stream.h"
#include "tensor/half.h"

namespace b3::cuda {

// bias may be null (no bias).
B3_CUDA_LAUNCHER(void linear_forward(const LinearGeometry& geometry, const void* x,
                                     const void* weight, const void* bias, void* y,
                                     const Stream& stream));
// Any of grad_x, grad_weight, grad_bias may be null to skip it; x is read
// only for grad_weight and weight only for grad_x.
B3_CUDA_LAUNCHER(void linear_backward(const LinearGeometry& geometry, const void* x,
                                      const void* weight, const void* grad_y, void* grad_x,
                                      void* grad_weight, void* grad_bias, const Stream& stream));

// The bias kernels, usable on their own, on a dense row-major [rows, cols]:
// out[r, c] = row[c]  (every row a copy of `row`)
B3_CUDA_LAUNCHER(void broadcast_row(const float* row, float* out, int64_t rows, int64_t cols,
                                    const Stream& stream));
B3_CUDA_LAUNCHER(void broadcast_row(const Half* row, Half* out, int64_t rows, int64_t cols,
                                    const Stream& stream));
// out[c] = sum over r of in[r, c]  (f32 accumulation in a fixed order)
B3_CUDA_LAUNCHER(void sum_rows(const float* in, float* out, int64_t rows, int64_t cols,
                               const Stream& stream));
B3_CUDA_LAUNCHER(void sum_rows(const Half* in, Half* out, int64_t rows, int64_t cols,
                               const Stream& stream));

}  // namespace b3::cuda
