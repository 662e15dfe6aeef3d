// Device names and the check that a requested device can be used.
#include "tensor/device.h"

#include <stdexcept>

namespace b3 {

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

void require_device_available(const Device& device, const std::string& what) {
  if (device.is_cpu()) return;
  if (!built_with_cuda()) {
    throw std::runtime_error(what + ": asked for a tensor on " + device.str() +
                             ", but b3 was built without CUDA (configure with -DB3_CUDA=ON "
                             "on a machine with the CUDA toolkit and cuDNN)");
  }
  const int count = cuda_device_count();
  if (device.index < 0 || device.index >= count) {
    throw std::runtime_error(what + ": asked for " + device.str() + ", but this machine has " +
                             std::to_string(count) + " usable CUDA device(s)" +
                             (count == 0 ? " (" + cuda_unavailable_reason() + ")" : ""));
  }
}

}  // namespace b3
