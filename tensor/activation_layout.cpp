// A tensor's ActivationLayout, and the dense copy that has one (see activation_layout.h).
#include "tensor/activation_layout.h"

namespace b3 {

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

}  // namespace b3
