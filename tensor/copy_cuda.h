// A strided copy on one CUDA device, with an optional f32 <-> f16 conversion:
// what Tensor::copy_ uses when a device tensor changes layout (NCHW <-> NHWC,
// a transpose, a narrow) or dtype. Element i of the logical row-major order
// of `sizes` is read at src + sum_d index_d * src_strides[d] and written at
// dst + sum_d index_d * dst_strides[d] (strides in elements). Same-dtype
// copies move the element's bytes (any dtype of 1, 2, 4 or 8 bytes); f32 ->
// f16 rounds to nearest even, f16 -> f32 is exact. Declared for every build;
// defined in tensor/copy_cuda.cu (CUDA builds).
#pragma once

#include <cstdint>
#include <vector>

#include "tensor/cuda_stream.h"
#include "tensor/dtype.h"

namespace b3::cuda {

inline constexpr int kMaxCopyDims = 8;

struct StridedCopy {
  std::vector<int64_t> sizes;  // at most kMaxCopyDims
  std::vector<int64_t> src_strides;
  std::vector<int64_t> dst_strides;
};

B3_CUDA_LAUNCHER(void copy_strided(const void* src, DType src_dtype, void* dst, DType dst_dtype,
                                   const StridedCopy& geometry, const Stream& stream));

}  // namespace b3::cuda
