// Global average pooling on CUDA: the input made dense NCHW or NHWC, the
// forward launcher writing the [N, C] means into a [N, C, 1, 1] tensor, and an
// autograd node that keeps only the geometry (the backward spreads
// grad[n, c] / (H*W) and reads no activation), as the CPU path.
#include "layers/pooling_cuda_op.h"

#include <vector>

#include "autograd/node.h"
#include "layers/graph_input.h"
#include "layers/pooling_cuda.h"
#include "tensor/activation_layout.h"
#include "tensor/cuda_tensor.h"

namespace b3::cuda_op {

namespace {

constexpr const char* kOp = "adaptive_avg_pool2d";

// grad_out [N, C, 1, 1] -> the input gradient, dense in the forward input's
// layout, every (h, w) of plane (n, c) holding grad_out[n, c] / (H*W).
Tensor pool_backward(const Tensor& grad_out, const ActivationLayout& layout,
                     const Shape& input_shape, DType dtype, const Device& device) {
  Tensor g = grad_out.detach();
  if (g.dtype() != dtype) g = g.to(dtype);
  // [N, C, 1, 1] is dense NCHW in either format unless it is a strided view;
  // contiguous() then makes it the [N, C] block the launcher reads.
  g = g.contiguous();
  Tensor grad_in =
      empty(input_shape, TensorOptions(dtype).with_device(device).with_format(layout.format));
  const cuda::Stream stream = cuda::stream_of(grad_in);
  cuda::dispatch_cuda_float(dtype, kOp, [&](auto tag) {
    using T = decltype(tag);
    cuda::global_avg_pool_backward(static_cast<const T*>(g.data_ptr()),
                                   static_cast<T*>(grad_in.data_ptr()), layout, stream);
  });
  return grad_in;
}

}  // namespace

Tensor global_avg_pool2d(const Tensor& input) {
  cuda::require_same_cuda_device(kOp, {input});
  cuda::require_cuda_float(kOp, input);
  const Tensor x = dense_activation(input.detach());
  const ActivationLayout layout = activation_layout(x, kOp);
  Tensor out = empty({layout.batch, layout.channels, 1, 1},
                     TensorOptions(x.dtype()).with_device(x.device()));
  const cuda::Stream stream = cuda::stream_of(x);
  cuda::dispatch_cuda_float(x.dtype(), kOp, [&](auto tag) {
    using T = decltype(tag);
    cuda::global_avg_pool_forward(static_cast<const T*>(x.data_ptr()),
                                  static_cast<T*>(out.data_ptr()), layout, stream);
  });
  if (should_record({input})) {
    const Shape input_shape = input.shape();
    const DType dtype = x.dtype();
    const Device device = x.device();
    record_lambda(
        out, "AdaptiveAvgPool2dBackward", {graph_input(input)},
        [layout, input_shape, dtype, device](const Tensor& g) {
          return std::vector<Tensor>{pool_backward(g, layout, input_shape, dtype, device)};
        });
  }
  return out;
}

}  // namespace b3::cuda_op
