// The strided copy kernel of tensor/copy_cuda.h: one thread per element,
// logical index -> (source offset, destination offset) by dividing through
// the sizes, innermost first.
#include <stdexcept>
#include <string>
#include <type_traits>

#include "tensor/copy_cuda.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cuda_kernels.cuh"

namespace b3::cuda {

namespace {

struct CopyGeometry {  // passed by value to the kernel
  int rank = 0;
  int64_t sizes[kMaxCopyDims] = {};
  int64_t src_strides[kMaxCopyDims] = {};
  int64_t dst_strides[kMaxCopyDims] = {};
};

template <typename Src, typename Dst>
__global__ void copy_strided_kernel(const Src* __restrict__ src, Dst* __restrict__ dst,
                                    CopyGeometry g, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    int64_t rest = i, src_offset = 0, dst_offset = 0;
    for (int d = g.rank - 1; d >= 0; --d) {
      const int64_t index = rest % g.sizes[d];
      rest /= g.sizes[d];
      src_offset += index * g.src_strides[d];
      dst_offset += index * g.dst_strides[d];
    }
    if constexpr (std::is_same_v<Src, Dst>) {
      dst[dst_offset] = src[src_offset];
    } else {
      dst[dst_offset] = detail::from_float<Dst>(detail::to_float(src[src_offset]));
    }
  }
}

// Same-dtype copies by element size: the bytes move unchanged.
template <int Bytes>
struct Word;
template <>
struct Word<1> {
  using type = uint8_t;
};
template <>
struct Word<2> {
  using type = uint16_t;
};
template <>
struct Word<4> {
  using type = uint32_t;
};
template <>
struct Word<8> {
  using type = uint64_t;
};

template <typename Src, typename Dst>
void launch(const void* src, void* dst, const CopyGeometry& g, int64_t n, const Stream& stream) {
  DeviceGuard guard(stream.device);
  copy_strided_kernel<<<detail::blocks_for(n), detail::kThreadsPerBlock, 0, stream.handle>>>(
      static_cast<const Src*>(src), static_cast<Dst*>(dst), g, n);
  B3_CUDA_CHECK_LAUNCH("copy_strided_kernel");
}

}  // namespace

void copy_strided(const void* src, DType src_dtype, void* dst, DType dst_dtype,
                  const StridedCopy& geometry, const Stream& stream) {
  const size_t rank = geometry.sizes.size();
  if (rank > static_cast<size_t>(kMaxCopyDims) || geometry.src_strides.size() != rank ||
      geometry.dst_strides.size() != rank) {
    throw std::invalid_argument("cuda::copy_strided: " + std::to_string(rank) + " dims (at most " +
                                std::to_string(kMaxCopyDims) + ") with strides for " +
                                std::to_string(geometry.src_strides.size()) + " and " +
                                std::to_string(geometry.dst_strides.size()));
  }
  CopyGeometry g;
  g.rank = static_cast<int>(rank);
  int64_t n = 1;
  for (size_t d = 0; d < rank; ++d) {
    detail::check_nonnegative(geometry.sizes[d], "cuda::copy_strided", "size");
    g.sizes[d] = geometry.sizes[d];
    g.src_strides[d] = geometry.src_strides[d];
    g.dst_strides[d] = geometry.dst_strides[d];
    n *= geometry.sizes[d];
  }
  if (n == 0) return;
  detail::check_pointer(src, n, "cuda::copy_strided", "src");
  detail::check_pointer(dst, n, "cuda::copy_strided", "dst");
  if (src_dtype == dst_dtype) {
    switch (dtype_size(src_dtype)) {
      case 1: return launch<Word<1>::type, Word<1>::type>(src, dst, g, n, stream);
      case 2: return launch<Word<2>::type, Word<2>::type>(src, dst, g, n, stream);
      case 4: return launch<Word<4>::type, Word<4>::type>(src, dst, g, n, stream);
      case 8: return launch<Word<8>::type, Word<8>::type>(src, dst, g, n, stream);
      default: break;
    }
  } else if (src_dtype == DType::f32 && dst_dtype == DType::f16) {
    return launch<float, __half>(src, dst, g, n, stream);
  } else if (src_dtype == DType::f16 && dst_dtype == DType::f32) {
    return launch<__half, float>(src, dst, g, n, stream);
  }
  throw std::invalid_argument(std::string("cuda::copy_strided: no device conversion from ") +
                              dtype_name(src_dtype) + " to " + dtype_name(dst_dtype) +
                              " (f32 <-> f16 and same-dtype copies only)");
}

}  // namespace b3::cuda
