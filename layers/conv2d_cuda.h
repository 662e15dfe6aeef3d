// 2-D convolution on CUDA through cuDNN (semantics in layers/conv2d.h,
// PyTorch's): forward, backward data, backward filter and bias, on raw device
// memory, for f32 and f16, NCHW and NHWC.
//
// Layout: the input, the output, the weight and their gradients all use
// geometry.format (layers/conv2d.h's Conv2dGeometry, the CPU kernels' too). The weight is logically
// [Cout, Cin/groups, k, k]; in NHWC (channels_last) its memory order is [Cout, k, k, Cin/groups]
// (cuDNN's KRSC), as PyTorch stores a channels_last weight. The bias is [Cout], dense. Precision:
// f16 tensors are computed with f32 accumulation (cuDNN's CUDNN_DATA_HALF data with
// CUDNN_DATA_FLOAT compute) and Tensor Core math allowed; f32 tensors use FMA-only math (no TF32),
// so f32 results can be checked against the CPU at 1e-5. alpha = 1 and beta = 0: every output is
// overwritten, never accumulated into.
//
// Algorithms: for each shape (and dtype, layout, search mode) each pass picks
// its cuDNN algorithm once and caches it in the device's CudaContext, like
// torch.backends.cudnn.benchmark = True: `benchmark` times every algorithm
// on the call's own buffers with cudnnFind*AlgorithmEx (the first call of a
// shape is slow, and synchronizes); `heuristic` takes cuDNN's first
// suggestion (cudnnGet*Algorithm_v7), with no timing. The workspace comes
// from the caching allocator, for the call's stream. When the chosen
// algorithm fails (NOT_SUPPORTED, EXECUTION_FAILED, ALLOC_FAILED,
// INTERNAL_ERROR) or its workspace cannot be allocated even after the
// allocator gave its cache back, the next acceptable candidate is tried (as
// PyTorch does), the one that works replaces the cache entry, and the
// fallback is said on stderr; only with no candidate left is it an error.
// conv_algorithm_report() lists what was chosen. Defined in conv2d_cuda.cpp (CUDA builds).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "layers/conv2d.h"
#include "tensor/cuda_stream.h"

namespace b3::cuda {

enum class ConvAlgorithmSearch { heuristic, benchmark };

struct ConvAlgorithmPolicy {
  ConvAlgorithmSearch search = ConvAlgorithmSearch::benchmark;
  bool deterministic = false;  // only algorithms without atomics (bit-reproducible)
  size_t max_workspace_bytes = size_t{1} << 30;
};

// y = conv2d(x, w) (+ bias, when not null).
B3_CUDA_LAUNCHER(void conv2d_forward(const Conv2dGeometry& geometry, const void* x, const void* w,
                                     const void* bias, void* y, const Stream& stream,
                                     const ConvAlgorithmPolicy& policy = {}));
// grad_x = dL/dx from grad_y = dL/dy.
B3_CUDA_LAUNCHER(void conv2d_backward_data(const Conv2dGeometry& geometry, const void* w,
                                           const void* grad_y, void* grad_x, const Stream& stream,
                                           const ConvAlgorithmPolicy& policy = {}));
// grad_w = dL/dw.
B3_CUDA_LAUNCHER(void conv2d_backward_filter(const Conv2dGeometry& geometry, const void* x,
                                             const void* grad_y, void* grad_w, const Stream& stream,
                                             const ConvAlgorithmPolicy& policy = {}));
// grad_bias[co] = sum of grad_y over n, y, x.
B3_CUDA_LAUNCHER(void conv2d_backward_bias(const Conv2dGeometry& geometry, const void* grad_y,
                                           void* grad_bias, const Stream& stream));

// Every convolution on `device` from now on uses only deterministic
// algorithms (no atomics: the same inputs give the same bits), whatever its
// policy says, as torch.backends.cudnn.deterministic = True, and picks them
// by cuDNN's heuristics instead of by timing (torch.backends.cudnn.benchmark
// = False), so that another process makes the same choice; false restores
// the policies' own choice. `b3 train --deterministic`, and tests that
// compare two runs bit for bit.
B3_CUDA_LAUNCHER(void set_deterministic_convolutions(int device, bool on));

// The algorithms chosen so far on `device`, one block per shape:
//   f16 NHWC x[...] w[...] stride 1 pad 1 groups 16 (benchmark)
//     forward          IMPLICIT_PRECOMP_GEMM  TENSOR_OP  workspace 0 B      0.052 ms
B3_CUDA_LAUNCHER(std::string conv_algorithm_report(int device));

}  // namespace b3::cuda
