// Device side of optim/multi_tensor_cuda.h (CUDA sources only): the loop over
// a table's chunks that each fused kernel runs, and the launch size.
#pragma once

#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "optim/grad_scaler_cuda.h"
#include "optim/multi_tensor_cuda.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/dtype.h"

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

// The checks every fused optimizer step makes of its table: the `lists` lists
// `optimizer` needs (named in `list_names` for the message), f32 or f16
// gradients, the table on the stream's device, and a step counter. Throws
// std::invalid_argument naming `op`.
inline void check_optimizer_table(const MultiTensorTable& table, const char* optimizer, int lists,
                                  const char* list_names, DType grad_dtype, const int64_t* step,
                                  const Stream& stream, const char* op) {
  if (table.lists != lists) {
    throw std::invalid_argument(std::string(op) + ": the table has " + std::to_string(table.lists) +
                                " lists, " + optimizer + " needs " + std::to_string(lists) + " (" +
                                list_names + ")");
  }
  if (grad_dtype != DType::f32 && grad_dtype != DType::f16) {
    throw std::invalid_argument(std::string(op) + ": gradients must be f32 or f16, not " +
                                dtype_name(grad_dtype));
  }
  if (table.device != stream.device) {
    throw std::invalid_argument(std::string(op) +
                                ": the table is on cuda:" + std::to_string(table.device) +
                                ", the stream on cuda:" + std::to_string(stream.device));
  }
  if (step == nullptr) throw std::invalid_argument(std::string(op) + ": step is null");
}

// What a fused optimizer multiplies each gradient by: 1 / scale while the
// gradients are still scaled, 1 without a scaler or once unscale_gradients
// has divided them in place.
static __device__ __forceinline__ float gradient_multiplier(const LossScaleState* scaler) {
  return scaler != nullptr && scaler->gradients_unscaled == 0 ? 1.0f / scaler->scale : 1.0f;
}

// The step counter advances unless the loss scaler found inf/nan (skipped step).
static __global__ void advance_step_kernel(int64_t* step, const LossScaleState* scaler) {
  if (scaler == nullptr || scaler->found_inf == 0) ++*step;
}

// Launches a fused optimizer kernel over the table (the f32- or f16-gradient
// instance, by grad_dtype), then advances the step counter on the device.
template <typename Constants>
void launch_optimizer_step(const MultiTensorTable& table, DType grad_dtype,
                           void (*kernel_f32)(MultiTensorView, Constants, const int64_t*,
                                              const LossScaleState*),
                           void (*kernel_f16)(MultiTensorView, Constants, const int64_t*,
                                              const LossScaleState*),
                           const Constants& constants, int64_t* step, const LossScaleState* scaler,
                           const Stream& stream, const char* kernel_name) {
  DeviceGuard guard(stream.device);
  if (table.view.chunks > 0) {
    const unsigned int blocks = multi_tensor_blocks(table.view);
    auto* kernel = grad_dtype == DType::f32 ? kernel_f32 : kernel_f16;
    kernel<<<blocks, kMultiTensorThreads, 0, stream.handle>>>(table.view, constants, step, scaler);
    const cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess) {
      throw_cuda_error(status, (std::string("launch of ") + kernel_name).c_str(), __FILE__,
                       __LINE__);
    }
  }
  advance_step_kernel<<<1, 1, 0, stream.handle>>>(step, scaler);
  B3_CUDA_CHECK_LAUNCH("advance_step_kernel");
}

}  // namespace b3::cuda::detail
