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

Tensor dense_activation(const Tensor& t) {
  const MemoryFormat format = t.suggest_memory_format();
  return t.is_contiguous(format) ? t : t.contiguous(format);
}

ActivationLayout activation_layout(const Tensor& t, const char* op) {
  if (t.dim() != 4) {
    throw std::invalid_argument(std::string(op) + ": expected a 4-D [N, C, H, W] tensor, got " +
                                shape_str(t.shape()));
  }
  const MemoryFormat format = t.suggest_memory_format();
  if (!t.is_contiguous(format)) {
    throw std::invalid_argument(std::string(op) + ": expected a dense NCHW or NHWC tensor, got " +
                                t.str());
  }
  ActivationLayout layout;
  layout.batch = t.size(0);
  layout.channels = t.size(1);
  layout.height = t.size(2);
  layout.width = t.size(3);
  layout.format = format;
  layout.check(op);
  return layout;
}

}  // namespace b3::cuda
