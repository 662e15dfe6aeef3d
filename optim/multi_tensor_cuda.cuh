// Device side of optim/multi_tensor_cuda.h (CUDA sources only): the loop over
// a table's chunks that each fused kernel runs, and the launch size.
#pragma once

#include <algorithm>
#include <cstdint>

#include "optim/multi_tensor_cuda.h"

namespace b3::cuda::detail {

constexpr int kMultiTensorThreads = 256;

// Blocks for a multi-tensor launch: one per chunk, at most 2048 (each block
// then takes several chunks).
inline unsigned int multi_tensor_blocks(const MultiTensorView& view) {
  return static_cast<unsigned int>(std::min<int64_t>(view.chunks, 2048));
}

// Calls body(tensor, start, count) for each chunk of this block: elements
// [start, start + count) of tensor `tensor`.
template <typename Body>
__device__ __forceinline__ void for_each_chunk(const MultiTensorView& view, Body body) {
  for (int64_t chunk = blockIdx.x; chunk < view.chunks; chunk += gridDim.x) {
    const int32_t tensor = view.chunk_tensor[chunk];
    const int64_t start = view.chunk_start[chunk];
    const int64_t remaining = view.numels[tensor] - start;
    body(tensor, start, remaining < kChunkElements ? remaining : kChunkElements);
  }
}

template <typename T>
__device__ __forceinline__ T* table_pointer(const MultiTensorView& view, int32_t tensor, int list) {
  return static_cast<T*>(view.pointers[int64_t{tensor} * view.lists + list]);
}

}  // namespace b3::cuda::detail
