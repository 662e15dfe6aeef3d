// Squeeze-excitation's channel scale on CUDA: the forward and the input
// gradient are per-(n, c) broadcasts, the scale gradient a per-(n, c) sum of
// grad_out * x (layers/channel_reduce_cuda.cuh).
#include "layers/squeeze_excite_cuda.h"

#include "layers/channel_reduce_cuda.cuh"

namespace b3::cuda {

namespace {

template <typename T>
void scale_forward(const T* x, const T* scale, T* out, const ActivationLayout& layout,
                   const Stream& stream) {
  const char* op = "cuda::channel_scale_forward";
  layout.check(op);
  detail::check_pointer(x, layout.numel(), op, "x");
  detail::check_pointer(scale, layout.numel() > 0 ? layout.batch * layout.channels : 0, op,
                        "scale");
  detail::check_pointer(out, layout.numel(), op, "out");
  detail::launch_channel_broadcast(detail::device_pointer(x), detail::device_pointer(scale),
                                   detail::device_pointer(out), layout, 1.0f, stream);
}

template <typename T>
void scale_backward(const T* x, const T* scale, const T* grad_out, T* grad_x, T* grad_scale,
                    const ActivationLayout& layout, const Stream& stream) {
  const char* op = "cuda::channel_scale_backward";
  layout.check(op);
  const int64_t rows = layout.batch * layout.channels;
  detail::check_pointer(grad_out, layout.numel(), op, "grad_out");
  if (grad_x != nullptr) {
    detail::check_pointer(scale, layout.numel() > 0 ? rows : 0, op, "scale");
    detail::launch_channel_broadcast(detail::device_pointer(grad_out),
                                     detail::device_pointer(scale), detail::device_pointer(grad_x),
                                     layout, 1.0f, stream);
  }
  if (grad_scale != nullptr) {
    detail::check_pointer(x, layout.numel(), op, "x");
    // An empty H*W plane sums to 0, as torch's sum does.
    detail::launch_channel_sum(detail::device_pointer(grad_out), detail::device_pointer(x),
                               detail::device_pointer(grad_scale), layout, 1.0f, stream);
  }
}

}  // namespace

void channel_scale_forward(const float* x, const float* scale, float* out,
                           const ActivationLayout& layout, const Stream& stream) {
  scale_forward(x, scale, out, layout, stream);
}
void channel_scale_forward(const Half* x, const Half* scale, Half* out,
                           const ActivationLayout& layout, const Stream& stream) {
  scale_forward(x, scale, out, layout, stream);
}
void channel_scale_backward(const float* x, const float* scale, const float* grad_out,
                            float* grad_x, float* grad_scale, const ActivationLayout& layout,
                            const Stream& stream) {
  scale_backward(x, scale, grad_out, grad_x, grad_scale, layout, stream);
}
void channel_scale_backward(const Half* x, const Half* scale, const Half* grad_out, Half* grad_x,
                            Half* grad_scale, const ActivationLayout& layout,
                            const Stream& stream) {
  scale_backward(x, scale, grad_out, grad_x, grad_scale, layout, stream);
}

}  // namespace b3::cuda
