// Global average pooling: one op for both devices. The input is made dense
// NCHW or NHWC, its ActivationLayout goes to the device's kernel (CPU:
// pooling_cpu.h, CUDA: pooling_cuda.h), and the autograd node keeps only the
// geometry: the backward spreads g[n, c] / (H*W) and reads no activation.
#include "layers/pooling.h"

#include <stdexcept>
#include <vector>

#include "autograd/node.h"
#include "layers/graph_input.h"
#include "layers/pooling_cpu.h"
#include "layers/pooling_cuda.h"
#include "tensor/activation_layout.h"
#include "tensor/cuda_tensor.h"
#include "tensor/ops.h"

namespace b3 {

namespace {

constexpr const char* kOp = "adaptive_avg_pool2d";

// A 4-D input with a non-empty plane (the mean over an empty one is
// undefined), in a dtype of its device's kernels.
void check_pool_input(const Tensor& input) {
  if (!input.defined()) throw std::invalid_argument(std::string(kOp) + ": input is undefined");
  if (runs_on_cuda(kOp, {input})) {
    cuda::require_cuda_float(kOp, input);
  } else {
    dispatch_float(input.dtype(), kOp, [](auto) {});
  }
  if (input.dim() != 4) {
    throw std::invalid_argument("adaptive_avg_pool2d: expected a 4-D [N, C, H, W] input, got " +
                                shape_str(input.shape()));
  }
  if (input.size(2) == 0 || input.size(3) == 0) {
    throw std::invalid_argument("adaptive_avg_pool2d: empty spatial size in " +
                                shape_str(input.shape()));
  }
}

// y [N, C] = means of x over H*W, on x's device.
void run_forward(const Tensor& x, const ActivationLayout& layout, Tensor& y) {
  if (x.device().is_cuda()) {
    cuda::dispatch_cuda_float(x.dtype(), kOp, [&](auto tag) {
      using T = decltype(tag);
      cuda::global_avg_pool_forward(static_cast<const T*>(x.data_ptr()),
                                    static_cast<T*>(y.data_ptr()), layout, cuda::stream_of(x));
    });
    return;
  }
  dispatch_float(x.dtype(), kOp, [&](auto tag) {
    using T = decltype(tag);
    cpu::global_avg_pool_forward(static_cast<const T*>(x.data_ptr()), static_cast<T*>(y.data_ptr()),
                                 layout);
  });
}

// grad_x (dense in `layout`) = g [N, C] / (H*W) at every (h, w), on g's device.
void run_backward(const Tensor& g, const ActivationLayout& layout, Tensor& grad_x) {
  if (g.device().is_cuda()) {
    cuda::dispatch_cuda_float(g.dtype(), kOp, [&](auto tag) {
      using T = decltype(tag);
      cuda::global_avg_pool_backward(static_cast<const T*>(g.data_ptr()),
                                     static_cast<T*>(grad_x.data_ptr()), layout,
                                     cuda::stream_of(g));
    });
    return;
  }
  dispatch_float(g.dtype(), kOp, [&](auto tag) {
    using T = decltype(tag);
    cpu::global_avg_pool_backward(static_cast<const T*>(g.data_ptr()),
                                  static_cast<T*>(grad_x.data_ptr()), layout);
  });
}

// grad_out [N, C, 1, 1] -> the input gradient, dense in the forward input's
// layout, dtype and device.
Tensor pool_backward(const Tensor& grad_out, const ActivationLayout& layout, const Shape& shape,
                     const TensorOptions& options) {
  Tensor g = grad_out.detach();
  if (g.dtype() != options.dtype) g = g.to(options.dtype);
  // [N, C, 1, 1] is the dense [N, C] block in either format unless it is a
  // strided view; contiguous() then makes it one.
  g = g.contiguous();
  Tensor grad_in = empty(shape, options.with_format(layout.format));
  run_backward(g, layout, grad_in);
  return grad_in;
}

}  // namespace

Tensor adaptive_avg_pool2d(const Tensor& input, int64_t output_size) {
  if (output_size != 1) {
    throw std::invalid_argument("adaptive_avg_pool2d: output size " + std::to_string(output_size) +
                                " is not supported (only 1, global pooling)");
  }
  check_pool_input(input);
  const Tensor x = dense_activation(input.detach());
  const ActivationLayout layout = activation_layout(x, kOp);
  const TensorOptions options = TensorOptions(x.dtype()).with_device(x.device());
  Tensor out = empty({layout.batch, layout.channels, 1, 1}, options);
  run_forward(x, layout, out);
  if (should_record({input})) {
    const Shape input_shape = input.shape();
    record_lambda(out, "AdaptiveAvgPool2dBackward", {graph_input(input)},
                  [layout, input_shape, options](const Tensor& g) {
                    return std::vector<Tensor>{pool_backward(g, layout, input_shape, options)};
                  });
  }
  return out;
}

AdaptiveAvgPool2d::AdaptiveAvgPool2d(int64_t output_size) : output_size_(output_size) {
  if (output_size != 1) {
    throw std::invalid_argument("AdaptiveAvgPool2d: output size " + std::to_string(output_size) +
                                " is not supported (only 1)");
  }
}

}  // namespace b3
