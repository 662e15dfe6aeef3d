// Single-precision matrix products for the convolutions' NHWC GEMMs, with
// AVX-512 register-blocked kernels where the CPU has them (and Eigen
// otherwise, and always for double).
//
// The convolutions of MobileNetV3 multiply a tall activation matrix (one row
// per pixel: up to 200,000 rows) by a small weight matrix (16..960 columns).
// A general GEMM packs both operands into blocks first, which for these shapes
// copies the whole activation matrix on every call; these kernels read the
// activations where they lie and pack only the small weight.
//
//   gemm_rows:  C[M, N] (+)= A[M, K] * op(B)     A, C row-major, op(B)[k, n] is
//               B[n * ldb + k] (b_transposed) or B[k * ldb + n]
//   gemm_at_b:  C[N, K] (+)= A[M, N]^T * B[M, K]  (a reduction over the M rows)
//
// Both use OpenMP threads (when the product is worth it) and give results
// that do not depend on the number of threads: gemm_rows splits the rows
// between threads, gemm_at_b sums fixed slices of rows in a fixed order.
#pragma once

#include <cstdint>
#include <functional>

#include "layers/normalized_activation_cpu.h"

namespace b3::cpu {

// With an active `epilogue`, each element of C, column j, is stored as
// act(v * scale[j] + shift[j]) of its value v (after the accumulation), plus
// the epilogue's residual element (laid out as C, ldc apart) when it has one.
void gemm_rows(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
               int64_t ldb, bool b_transposed, float* c, int64_t ldc, bool accumulate,
               const OutputEpilogue<float>& epilogue = {});

void gemm_at_b(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
               int64_t ldb, float* c, int64_t ldc, bool accumulate);

// The two products of a 1x1 convolution's backward, G = dL/d(output) [M, N]:
//   grad_x[M, K] = G * W          (W [N, K], row-major, ldw)
//   grad_w[N, K] = G^T * X        (X [M, K], the forward input)
// in one pass over G: slice by slice of rows, grad_x first, then the slice's
// share of grad_w while its rows of G are still in cache (G is read from
// memory once instead of twice). Results are bit-identical to gemm_rows and
// gemm_at_b. Returns false, doing nothing, when M is too small to give every
// thread slices (or without AVX-512): then call those two instead.
//
// With `g_rows` (and g null), G is never stored: each thread writes the
// slice of G it works on into a buffer of one slice with g_rows (rows
// [first, first + count), n floats each, dense) and reads it from there,
// in cache (BatchNorm's input gradient formed inside the convolution's
// backward, layers/conv2d.cpp). The same results as from a stored G.
using RowSource = std::function<void(int64_t first, int64_t count, float* out)>;
bool conv1x1_backward(int64_t m, int64_t n, int64_t k, const float* g, int64_t ldg, const float* w,
                      int64_t ldw, const float* x, int64_t ldx, float* grad_x, int64_t ldgx,
                      float* grad_w, int64_t ldgw, const RowSource& g_rows = {});

// True when the register-blocked kernels are compiled in (AVX-512 builds).
bool gemm_kernels_vectorized();

}  // namespace b3::cpu
