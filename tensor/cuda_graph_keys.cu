// write_random_keys (tensor/cuda_graph.h): a CUDA graph's random keys for
// its next replay, carried to the device in a kernel's arguments (512 bytes,
// well inside CUDA's 4 KiB parameter limit), so no host buffer has to stay
// valid until the copy runs and nothing waits.
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cuda_graph.h"

namespace b3::cuda {

namespace {

struct KeyValues {
  uint64_t value[GraphRandomKeys::kCapacity];
};

__global__ void write_keys_kernel(KeyValues values, int n, uint64_t* slots) {
  const int i = static_cast<int>(threadIdx.x);
  if (i < n) slots[i] = values.value[i];
}

}  // namespace

void write_random_keys(const uint64_t* values, int n, uint64_t* slots, const Stream& stream) {
  if (n < 0 || n > GraphRandomKeys::kCapacity) {
    throw std::invalid_argument("cuda::write_random_keys: n must be in [0, " +
                                std::to_string(GraphRandomKeys::kCapacity) + "], got " +
                                std::to_string(n));
  }
  if (n == 0) return;
  if (values == nullptr || slots == nullptr) {
    throw std::invalid_argument("cuda::write_random_keys: values and slots must not be null");
  }
  KeyValues packed{};
  for (int i = 0; i < n; ++i) packed.value[i] = values[i];
  DeviceGuard guard(stream.device);
  write_keys_kernel<<<1, GraphRandomKeys::kCapacity, 0, stream.handle>>>(packed, n, slots);
  B3_CUDA_CHECK_LAUNCH("write_keys_kernel");
}

}  // namespace b3::cuda
