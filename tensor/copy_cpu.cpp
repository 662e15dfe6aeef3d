// Strided element copy with type conversion, iterating in the destination's
// memory order so that writes stream (NCHW -> NHWC and back, permutes, casts).
#include "tensor/copy_cpu.h"

#include <algorithm>
#include <cstring>
#include <numeric>

namespace b3::cpu {

namespace {

template <typename To, typename From>
void copy_typed(To* dst, const Shape& dst_strides, const From* src, const Shape& src_strides,
                const Shape& shape) {
  const size_t rank = shape.size();
  if (rank == 0) {
    *dst = convert_value<To>(*src);
    return;
  }
  // Visit dims from the largest destination stride to the smallest.
  std::vector<size_t> order(rank);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return dst_strides[a] > dst_strides[b]; });
  const size_t inner = order.back();
  const int64_t inner_size = shape[inner];
  const int64_t inner_dst = dst_strides[inner];
  const int64_t inner_src = src_strides[inner];
  int64_t outer_count = 1;
  for (size_t k = 0; k + 1 < rank; ++k) outer_count *= shape[order[k]];

#pragma omp parallel for if (outer_count * inner_size > (1 << 16))
  for (int64_t outer = 0; outer < outer_count; ++outer) {
    // Decompose `outer` into indices of the outer dims (last outer dim fastest).
    int64_t rest = outer, dst_offset = 0, src_offset = 0;
    for (size_t k = rank - 1; k-- > 0;) {
      const size_t d = order[k];
      const int64_t i = rest % shape[d];
      rest /= shape[d];
      dst_offset += i * dst_strides[d];
      src_offset += i * src_strides[d];
    }
    To* out = dst + dst_offset;
    const From* in = src + src_offset;
    for (int64_t i = 0; i < inner_size; ++i)
      out[i * inner_dst] = convert_value<To>(in[i * inner_src]);
  }
}

}  // namespace

void copy_strided(Tensor& dst, const Tensor& src) {
  if (src.numel() == 0) return;
  // Fast path: same dtype, both dense with identical strides -> one memcpy.
  if (dst.dtype() == src.dtype() && dst.strides() == src.strides() && dst.is_dense()) {
    std::memcpy(dst.data_ptr(), src.data_ptr(), dst.nbytes());
    return;
  }
  dispatch_all(dst.dtype(), [&](auto to_tag) {
    using To = decltype(to_tag);
    dispatch_all(src.dtype(), [&](auto from_tag) {
      using From = decltype(from_tag);
      copy_typed<To, From>(static_cast<To*>(dst.data_ptr()), dst.strides(),
                           static_cast<const From*>(src.data_ptr()), src.strides(), src.shape());
    });
  });
}

}  // namespace b3::cpu
