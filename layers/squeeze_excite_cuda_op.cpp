// Squeeze-excitation's channel scale on CUDA: x made dense NCHW or NHWC, the
// scale made the dense [N, C] block the launchers read, and an autograd node
// that saves only what its backward reads:
//   grad_x[n, c, h, w] = grad_out * scale[n, c]          (needs the scale)
//   grad_scale[n, c]   = sum over (h, w) of grad_out * x (needs x)
#include "layers/squeeze_excite_cuda_op.h"

#include <vector>

#include "autograd/node.h"
#include "layers/graph_input.h"
#include "layers/squeeze_excite_cuda.h"
#include "tensor/activation_layout.h"
#include "tensor/cuda_tensor.h"
#include "tensor/ops.h"

namespace b3::cuda_op {

namespace {

constexpr const char* kOp = "channel_scale";

// What the backward keeps: x when the scale needs a gradient, the scale when
// x does (each undefined otherwise), and the geometry.
struct SavedScale {
  Tensor x;      // detached, dense in `layout`, or undefined
  Tensor scale;  // detached, dense [N, C, 1, 1], or undefined
  ActivationLayout layout;
  DType dtype = DType::f32;
  Device device;
};

std::vector<Tensor> channel_scale_backward(const SavedScale& saved, const Tensor& grad_out) {
  const bool need_x = saved.scale.defined(), need_scale = saved.x.defined();
  Tensor g = grad_out.detach();
  if (g.dtype() != saved.dtype) g = g.to(saved.dtype);
  // g dense in the forward's layout: x's exact strides when x is kept, else
  // the forward's memory format (a copy only when g is in another).
  g = need_scale ? align_layout(g, saved.x) : g.contiguous(saved.layout.format);
  Tensor grad_x = need_x ? empty_strided_like(g) : Tensor();
  Tensor grad_scale = need_scale ? empty({saved.layout.batch, saved.layout.channels, 1, 1},
                                         TensorOptions(saved.dtype).with_device(saved.device))
                                 : Tensor();
  const cuda::Stream stream = cuda::stream_of(g);
  cuda::dispatch_cuda_float(saved.dtype, kOp, [&](auto tag) {
    using T = decltype(tag);
    auto pointer = [](const Tensor& t) {
      return t.defined() ? static_cast<const T*>(t.data_ptr()) : nullptr;
    };
    auto mutable_pointer = [](Tensor& t) {
      return t.defined() ? static_cast<T*>(t.data_ptr()) : nullptr;
    };
    cuda::channel_scale_backward(pointer(saved.x), pointer(saved.scale), pointer(g),
                                 mutable_pointer(grad_x), mutable_pointer(grad_scale), saved.layout,
                                 stream);
  });
  return {grad_x, grad_scale};
}

}  // namespace

Tensor channel_scale(const Tensor& x_in, const Tensor& scale_in) {
  cuda::require_same_cuda_device(kOp, {x_in, scale_in});
  cuda::require_cuda_float(kOp, x_in);
  const Tensor x = dense_activation(x_in.detach());
  // [N, C, 1, 1] in NCHW is the [N, C] block; a channels_last [N, C, 1, 1] is
  // the same bytes, so contiguous() copies only a strided view.
  const Tensor s = scale_in.detach().contiguous();
  const ActivationLayout layout = activation_layout(x, kOp);
  Tensor out = empty_strided_like(x);
  const cuda::Stream stream = cuda::stream_of(x);
  cuda::dispatch_cuda_float(x.dtype(), kOp, [&](auto tag) {
    using T = decltype(tag);
    cuda::channel_scale_forward(static_cast<const T*>(x.data_ptr()),
                                static_cast<const T*>(s.data_ptr()),
                                static_cast<T*>(out.data_ptr()), layout, stream);
  });
  if (should_record({x_in, scale_in})) {
    SavedScale saved;
    if (scale_in.requires_grad()) saved.x = x;
    if (x_in.requires_grad()) saved.scale = s;
    saved.layout = layout;
    saved.dtype = x.dtype();
    saved.device = x.device();
    record_lambda(
        out, "ChannelScaleBackward", {graph_input(x_in), graph_input(scale_in)},
        [saved](const Tensor& grad_out) { return channel_scale_backward(saved, grad_out); });
  }
  return out;
}

}  // namespace b3::cuda_op
