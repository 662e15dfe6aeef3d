// Building a MultiTensorTable (optim/multi_tensor_cuda.h): the pointer, size
// and chunk arrays are laid out on the host in one block and copied to one
// device allocation.
#include "optim/multi_tensor_cuda.h"

#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "tensor/allocator.h"
#include "tensor/device.h"

namespace b3::cuda {

MultiTensorTable make_multi_tensor_table(int device, int lists, const std::vector<void*>& pointers,
                                         const std::vector<int64_t>& numels) {
  const char* op = "cuda::make_multi_tensor_table";
  if (lists <= 0) throw std::invalid_argument(std::string(op) + ": lists must be positive");
  if (pointers.size() != numels.size() * static_cast<size_t>(lists)) {
    throw std::invalid_argument(std::string(op) + ": " + std::to_string(pointers.size()) +
                                " pointers for " + std::to_string(numels.size()) + " tensors of " +
                                std::to_string(lists) + " lists");
  }
  if (numels.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    throw std::invalid_argument(std::string(op) + ": too many tensors");
  }
  MultiTensorTable table;
  table.device = device;
  table.lists = lists;
  table.host_pointers = pointers;
  table.numels = numels;
  std::vector<int32_t> chunk_tensor;
  std::vector<int64_t> chunk_start;
  for (size_t t = 0; t < numels.size(); ++t) {
    if (numels[t] < 0) {
      throw std::invalid_argument(std::string(op) + ": tensor " + std::to_string(t) + " has " +
                                  std::to_string(numels[t]) + " elements");
    }
    table.elements += numels[t];
    for (int64_t start = 0; start < numels[t]; start += kChunkElements) {
      chunk_tensor.push_back(static_cast<int32_t>(t));
      chunk_start.push_back(start);
    }
  }
  // One block: pointers | numels | chunk_start (all 8-byte) | chunk_tensor (4-byte).
  const size_t pointer_bytes = pointers.size() * sizeof(void*);
  const size_t numel_bytes = numels.size() * sizeof(int64_t);
  const size_t start_bytes = chunk_start.size() * sizeof(int64_t);
  const size_t tensor_bytes = chunk_tensor.size() * sizeof(int32_t);
  const size_t total = pointer_bytes + numel_bytes + start_bytes + tensor_bytes;
  if (total == 0) return table;  // nothing to update: view.chunks == 0, kernels launch nothing
  std::vector<unsigned char> host(total);
  if (pointer_bytes > 0) std::memcpy(host.data(), pointers.data(), pointer_bytes);
  if (numel_bytes > 0) std::memcpy(host.data() + pointer_bytes, numels.data(), numel_bytes);
  if (start_bytes > 0) {
    std::memcpy(host.data() + pointer_bytes + numel_bytes, chunk_start.data(), start_bytes);
  }
  if (tensor_bytes > 0) {
    std::memcpy(host.data() + pointer_bytes + numel_bytes + start_bytes, chunk_tensor.data(),
                tensor_bytes);
  }
  const Device where = Device::cuda(device);
  Allocation allocation = allocate(total, where, default_allocation(where));
  copy_bytes_cuda(allocation.data, where, host.data(), Device::cpu(), total);
  auto* base = static_cast<unsigned char*>(allocation.data);
  table.view.pointers = reinterpret_cast<void* const*>(base);
  table.view.numels = reinterpret_cast<const int64_t*>(base + pointer_bytes);
  table.view.chunk_start = reinterpret_cast<const int64_t*>(base + pointer_bytes + numel_bytes);
  table.view.chunk_tensor =
      reinterpret_cast<const int32_t*>(base + pointer_bytes + numel_bytes + start_bytes);
  table.view.chunks = static_cast<int64_t>(chunk_start.size());
  table.view.lists = lists;
  table.storage = allocation.owner;
  return table;
}

}  // namespace b3::cuda
