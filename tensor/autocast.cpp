// The thread-local autocast mode (see autocast.h for why it is thread_local).
#include "tensor/autocast.h"

namespace b3 {

namespace {
thread_local std::optional<DType> active_autocast_dtype;
}

std::optional<DType> autocast_dtype() { return active_autocast_dtype; }

AutocastGuard::AutocastGuard(DType dtype) : previous_(active_autocast_dtype) {
  if (dtype != DType::f16) {
    throw std::invalid_argument(std::string("AutocastGuard: only f16 is supported, got ") +
                                dtype_name(dtype));
  }
  active_autocast_dtype = dtype;
}

AutocastGuard::~AutocastGuard() { active_autocast_dtype = previous_; }

Tensor autocast_cast(const Tensor& t) {
  const std::optional<DType> target = active_autocast_dtype;
  if (!target || !t.defined() || !t.device().is_cuda() || !is_floating(t.dtype()) ||
      t.dtype() == *target) {
    return t;
  }
  return t.to(*target);
}

}  // namespace b3
