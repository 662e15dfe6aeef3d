// One fused kernel launch over many tensors ("multi-tensor apply", as in apex
// and torch._foreach_*): the optimizers update all parameters of a model,
// and the loss scaler checks all gradients, in one launch instead of one per
// tensor (MobileNetV3 has ~170 parameter tensors, most of them tiny).
//
// A MultiTensorTable lists, for each tensor, `lists` device pointers (e.g.
// parameter, gradient, moments) and its element count, and cuts every tensor
// into chunks of kChunkElements; a kernel's blocks walk the chunks. The table
// lives in device memory and is built once (parameters and optimizer state do
// not move between steps), so a step launches without copying anything from
// the host, which a CUDA graph capture of the step will need. Rebuild it if
// any of the listed buffers is reallocated.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "tensor/cuda_stream.h"

namespace b3::cuda {

inline constexpr int64_t kChunkElements = 16384;

// What a kernel reads (all device pointers into the table's storage).
struct MultiTensorView {
  void* const* pointers = nullptr;        // [tensors * lists], tensor-major
  const int64_t* numels = nullptr;        // [tensors]
  const int32_t* chunk_tensor = nullptr;  // [chunks]: the tensor a chunk belongs to
  const int64_t* chunk_start = nullptr;   // [chunks]: its first element in that tensor
  int64_t chunks = 0;
  int32_t lists = 0;
};

struct MultiTensorTable {
  int device = 0;
  int lists = 0;
  std::vector<void*> host_pointers;  // [tensors * lists]: what the device table holds
  std::vector<int64_t> numels;       // [tensors]
  int64_t elements = 0;              // sum of numels
  MultiTensorView view;              // device arrays, inside `storage`
  std::shared_ptr<void> storage;     // owns the device memory of the arrays

  int64_t tensors() const { return static_cast<int64_t>(numels.size()); }
  void* pointer(int64_t tensor, int list) const {
    return host_pointers[static_cast<size_t>(tensor * lists + list)];
  }
};

// Builds the table on `device` (synchronously: it copies the arrays up once).
// pointers is tensor-major, numels.size() * lists entries; a null pointer is
// allowed where the kernel using the table says a list is optional.
B3_CUDA_LAUNCHER(MultiTensorTable make_multi_tensor_table(int device, int lists,
                                                          const std::vector<void*>& pointers,
                                                          const std::vector<int64_t>& numels));

}  // namespace b3::cuda
