// Tensor-to-launcher glue for the ops' CUDA paths (see cuda_tensor.h).
#include "tensor/cuda_tensor.h"

#include <stdexcept>
#include <string>

namespace b3::cuda {

Stream stream_of(const Tensor& t) {
  if (!t.device().is_cuda()) {
    throw std::logic_error("stream_of: " + t.str() + " is not on a CUDA device");
  }
  return compute_stream(t.device().index);
}

void require_same_cuda_device(const char* op, std::initializer_list<Tensor> tensors) {
  const Tensor* first = nullptr;
  for (const Tensor& t : tensors) {
    if (!t.defined()) continue;
    if (!t.device().is_cuda()) {
      throw std::invalid_argument(std::string(op) + ": expected every tensor on a CUDA device, " +
                                  "got " + t.str() + " (move it with .to(Device::cuda()))");
    }
    if (first == nullptr) {
      first = &t;
    } else if (!(t.device() == first->device())) {
      throw std::invalid_argument(std::string(op) + ": tensors on different devices, " +
                                  first->device().str() + " and " + t.device().str());
    }
  }
}

void require_cuda_float(const char* op, const Tensor& t) {
  dispatch_cuda_float(t.dtype(), op, [](auto) {});
}

}  // namespace b3::cuda

namespace b3 {

bool runs_on_cuda(const char* op, std::initializer_list<Tensor> tensors) {
  for (const Tensor& t : tensors) {
    if (t.defined() && t.device().is_cuda()) {
      cuda::require_same_cuda_device(op, tensors);
      return true;
    }
  }
  return false;
}

}  // namespace b3
