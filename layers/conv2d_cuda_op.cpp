// conv2d on CUDA tensors: dense NCHW or NHWC data to cuDNN (layers/conv2d_cuda.h)
// and the autograd node whose backward runs cuDNN's three backward passes.
// Nothing here waits for the device: every launch is queued on the input's
// compute stream.
#include "layers/conv2d_cuda_op.h"

#include <memory>
#include <utility>
#include <vector>

#include "autograd/node.h"
#include "layers/conv2d_cuda.h"
#include "layers/graph_input.h"
#include "tensor/activation_layout.h"
#include "tensor/cuda_tensor.h"

namespace b3::cuda_op {

namespace {

cuda::ConvGeometry geometry_of(const cpu::Conv2dShape& shape, MemoryFormat format, DType dtype) {
  cuda::ConvGeometry g;
  g.batch = shape.batch;
  g.in_channels = shape.in_channels;
  g.in_height = shape.in_height;
  g.in_width = shape.in_width;
  g.out_channels = shape.out_channels;
  g.kernel = shape.kernel;
  g.stride = shape.stride;
  g.padding = shape.padding;
  g.groups = shape.groups;
  g.format = format;
  g.dtype = dtype;
  return g;
}

// The weight as cuDNN reads it in `format`: [Cout, Cin/groups, k, k] dense
// (KCRS) for NCHW, [Cout, k, k, Cin/groups] (KRSC, channels_last strides) for NHWC.
Tensor weight_in(const Tensor& weight, MemoryFormat format) {
  return weight.detach().contiguous(format);
}

// Saves the input (dense, in the forward's layout) only when the weight needs
// its gradient, and the weight (in the same layout) only when the input does.
class Conv2dCudaBackward final : public Node {
 public:
  Conv2dCudaBackward(const cuda::ConvGeometry& geometry, Tensor input, Tensor weight)
      : Node("Conv2dCudaBackward"),
        geometry_(geometry),
        input_(std::move(input)),
        weight_(std::move(weight)) {}

  std::vector<Tensor> backward(const Tensor& grad_output) override {
    // What was saved at forward time bounds what can be computed.
    const bool want_input = inputs[0].requires_grad() && weight_.defined();
    const bool want_weight = inputs[1].requires_grad() && input_.defined();
    const bool want_bias = inputs[2].defined() && inputs[2].requires_grad();
    cuda::require_same_cuda_device("conv2d backward", {grad_output, inputs[1]});

    // grad_output dense in the forward's layout and dtype (a copy only when it is not).
    Tensor gy =
        grad_output.dtype() == geometry_.dtype ? grad_output : grad_output.to(geometry_.dtype);
    gy = gy.contiguous(geometry_.format);
    const cuda::Stream stream = cuda::stream_of(gy);
    const TensorOptions options =
        TensorOptions(geometry_.dtype).with_device(gy.device()).with_format(geometry_.format);

    Tensor grad_input, grad_weight, grad_bias;
    if (want_input) {
      grad_input = empty(inputs[0].shape(), options);
      cuda::conv2d_backward_data(geometry_, weight_.data_ptr(), gy.data_ptr(),
                                 grad_input.data_ptr(), stream);
    }
    if (want_weight) {
      // KRSC (channels_last strides) in NHWC, as the weight was handed over.
      grad_weight = empty(inputs[1].shape(), options);
      cuda::conv2d_backward_filter(geometry_, input_.data_ptr(), gy.data_ptr(),
                                   grad_weight.data_ptr(), stream);
    }
    if (want_bias) {
      grad_bias = empty(inputs[2].shape(), options.with_format(MemoryFormat::contiguous));
      cuda::conv2d_backward_bias(geometry_, gy.data_ptr(), grad_bias.data_ptr(), stream);
    }
    return {grad_input, grad_weight, grad_bias};
  }

 private:
  cuda::ConvGeometry geometry_;
  Tensor input_;
  Tensor weight_;
};

}  // namespace

Tensor conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias,
              const cpu::Conv2dShape& shape) {
  cuda::require_same_cuda_device("conv2d", {input, weight, bias});
  cuda::require_cuda_float("conv2d", input);

  const Tensor x = dense_activation(input.detach());
  const MemoryFormat format = activation_layout(x, "conv2d").format;
  const Tensor w = weight_in(weight, format);
  const Tensor b = bias.defined() ? bias.detach().contiguous() : Tensor();
  const cuda::ConvGeometry geometry = geometry_of(shape, format, input.dtype());

  Tensor y = empty({shape.batch, shape.out_channels, shape.out_height, shape.out_width},
                   TensorOptions(input.dtype()).with_device(input.device()).with_format(format));
  cuda::conv2d_forward(geometry, x.data_ptr(), w.data_ptr(), b.defined() ? b.data_ptr() : nullptr,
                       y.data_ptr(), cuda::stream_of(x));

  if (should_record({input, weight, bias})) {
    auto node = std::make_shared<Conv2dCudaBackward>(
        geometry, weight.requires_grad() ? x : Tensor(), input.requires_grad() ? w : Tensor());
    record(y, std::move(node), {graph_input(input), graph_input(weight), graph_input(bias)});
  }
  return y;
}

}  // namespace b3::cuda_op
