// Global average pooling on CUDA: the forward is a per-(n, c) sum over H*W,
// the backward a per-(n, c) broadcast (layers/channel_reduce_cuda.cuh).
#include "layers/pooling_cuda.h"

#include "layers/channel_reduce_cuda.cuh"

namespace b3::cuda {

namespace {

void check_layout(const ActivationLayout& layout, const char* op) {
  layout.check(op);
  if (layout.spatial() == 0 && layout.batch * layout.channels > 0) {
    throw std::invalid_argument(std::string(op) + ": the mean over an empty " +
                                std::to_string(layout.height) + "x" + std::to_string(layout.width) +
                                " plane is undefined, in " + layout.str());
  }
}

template <typename T>
void pool_forward(const T* x, T* y, const ActivationLayout& layout, const Stream& stream) {
  const char* op = "cuda::global_avg_pool_forward";
  check_layout(layout, op);
  detail::check_pointer(x, layout.numel(), op, "x");
  detail::check_pointer(y, layout.batch * layout.channels, op, "y");
  detail::launch_channel_sum(detail::device_pointer(x), detail::device_pointer<T>(nullptr),
                             detail::device_pointer(y), layout,
                             static_cast<float>(layout.spatial()), stream);
}

template <typename T>
void pool_backward(const T* grad_y, T* grad_x, const ActivationLayout& layout,
                   const Stream& stream) {
  const char* op = "cuda::global_avg_pool_backward";
  check_layout(layout, op);
  detail::check_pointer(grad_y, layout.batch * layout.channels, op, "grad_y");
  detail::check_pointer(grad_x, layout.numel(), op, "grad_x");
  detail::launch_channel_broadcast(detail::device_pointer<T>(nullptr),
                                   detail::device_pointer(grad_y), detail::device_pointer(grad_x),
                                   layout, static_cast<float>(layout.spatial()), stream);
}

}  // namespace

void global_avg_pool_forward(const float* x, float* y, const ActivationLayout& layout,
                             const Stream& stream) {
  pool_forward(x, y, layout, stream);
}
void global_avg_pool_forward(const Half* x, Half* y, const ActivationLayout& layout,
                             const Stream& stream) {
  pool_forward(x, y, layout, stream);
}
void global_avg_pool_backward(const float* grad_y, float* grad_x, const ActivationLayout& layout,
                              const Stream& stream) {
  pool_backward(grad_y, grad_x, layout, stream);
}
void global_avg_pool_backward(const Half* grad_y, Half* grad_x, const ActivationLayout& layout,
                              const Stream& stream) {
  pool_backward(grad_y, grad_x, layout, stream);
}

}  // namespace b3::cuda
