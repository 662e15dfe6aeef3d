// Squeeze-excitation: the module wiring, and the channel_scale op (x * s
// broadcast over H, W) with its backward, one op for both devices (kernels:
// squeeze_excite_cpu.h, squeeze_excite_cuda.h):
//   d out / d x[n,c,h,w] = s[n,c]
//   d out / d s[n,c]     = sum_{h,w} g[n,c,h,w] * x[n,c,h,w]
// The node saves only what its backward reads: x when the scale needs a
// gradient, the scale when x does.
#include "layers/squeeze_excite.h"

#include <stdexcept>

#include "autograd/node.h"
#include "layers/graph_input.h"
#include "layers/squeeze_excite_cpu.h"
#include "layers/squeeze_excite_cuda.h"
#include "tensor/activation_layout.h"
#include "tensor/cuda_tensor.h"
#include "tensor/ops.h"

namespace b3 {

int64_t make_divisible(double value, int64_t divisor, std::optional<int64_t> min_value) {
  if (divisor <= 0) throw std::invalid_argument("make_divisible: divisor must be positive");
  const int64_t floor_value = min_value.value_or(divisor);
  const auto rounded =
      static_cast<int64_t>(value + static_cast<double>(divisor) / 2.0) / divisor * divisor;
  int64_t result = std::max(floor_value, rounded);
  if (static_cast<double>(result) < 0.9 * value) result += divisor;
  return result;
}

namespace {

constexpr const char* kOp = "channel_scale";

void check_scale_arguments(const Tensor& x, const Tensor& scale) {
  if (!x.defined() || !scale.defined()) {
    throw std::invalid_argument("channel_scale: input and scale must be defined tensors");
  }
  if (runs_on_cuda(kOp, {x, scale})) {
    cuda::require_cuda_float(kOp, x);
  } else {
    dispatch_float(x.dtype(), kOp, [](auto) {});
  }
  if (x.dim() != 4) {
    throw std::invalid_argument("channel_scale: expected a 4-D [N, C, H, W] input, got " +
                                shape_str(x.shape()));
  }
  const Shape expected{x.size(0), x.size(1), 1, 1};
  if (scale.shape() != expected) {
    throw std::invalid_argument("channel_scale: scale has shape " + shape_str(scale.shape()) +
                                ", input " + shape_str(x.shape()) + " needs " +
                                shape_str(expected));
  }
  if (x.dtype() != scale.dtype()) {
    throw std::invalid_argument(std::string("channel_scale: input is ") + dtype_name(x.dtype()) +
                                ", scale is " + dtype_name(scale.dtype()));
  }
}

// out = x * s on x's device.
void run_forward(const Tensor& x, const Tensor& s, const ActivationLayout& layout, Tensor& out) {
  if (x.device().is_cuda()) {
    cuda::dispatch_cuda_float(x.dtype(), kOp, [&](auto tag) {
      using T = decltype(tag);
      cuda::channel_scale_forward(static_cast<const T*>(x.data_ptr()),
                                  static_cast<const T*>(s.data_ptr()),
                                  static_cast<T*>(out.data_ptr()), layout, cuda::stream_of(x));
    });
    return;
  }
  dispatch_float(x.dtype(), kOp, [&](auto tag) {
    using T = decltype(tag);
    cpu::channel_scale_forward(static_cast<const T*>(x.data_ptr()),
                               static_cast<const T*>(s.data_ptr()), static_cast<T*>(out.data_ptr()),
                               layout);
  });
}

// Whichever of grad_x, grad_scale is defined, from g on g's device.
void run_backward(const Tensor& x, const Tensor& s, const Tensor& g, Tensor& grad_x,
                  Tensor& grad_scale, const ActivationLayout& layout) {
  if (g.device().is_cuda()) {
    cuda::dispatch_cuda_float(g.dtype(), kOp, [&](auto tag) {
      using T = decltype(tag);
      cuda::channel_scale_backward(pointer_or_null<T>(x), pointer_or_null<T>(s),
                                   pointer_or_null<T>(g), mutable_pointer_or_null<T>(grad_x),
                                   mutable_pointer_or_null<T>(grad_scale), layout,
                                   cuda::stream_of(g));
    });
    return;
  }
  dispatch_float(g.dtype(), kOp, [&](auto tag) {
    using T = decltype(tag);
    cpu::channel_scale_backward(pointer_or_null<T>(x), pointer_or_null<T>(s), pointer_or_null<T>(g),
                                mutable_pointer_or_null<T>(grad_x),
                                mutable_pointer_or_null<T>(grad_scale), layout);
  });
}

// What the backward keeps: x when the scale needs a gradient, the scale when
// x does (each undefined otherwise), and the geometry.
struct SavedScale {
  Tensor x;      // detached, dense in `layout`, or undefined
  Tensor scale;  // detached, dense [N, C, 1, 1], or undefined
  ActivationLayout layout;
  TensorOptions options;  // the forward's dtype and device
};

std::vector<Tensor> channel_scale_backward(const SavedScale& saved, const Tensor& grad_out) {
  const bool need_x = saved.scale.defined(), need_scale = saved.x.defined();
  Tensor g = grad_out.detach();
  if (g.dtype() != saved.options.dtype) g = g.to(saved.options.dtype);
  // g dense in the forward's layout: x's exact strides when x is kept, else
  // the forward's memory format (a copy only when g is in another).
  g = need_scale ? align_layout(g, saved.x) : g.contiguous(saved.layout.format);
  Tensor grad_x = need_x ? empty_strided_like(g) : Tensor();
  Tensor grad_scale = need_scale
                          ? empty({saved.layout.batch, saved.layout.channels, 1, 1}, saved.options)
                          : Tensor();
  run_backward(saved.x, saved.scale, g, grad_x, grad_scale, saved.layout);
  return {grad_x, grad_scale};
}

}  // namespace

Tensor channel_scale(const Tensor& x_in, const Tensor& scale_in) {
  check_scale_arguments(x_in, scale_in);
  const Tensor x = dense_activation(x_in.detach());
  // [N, C, 1, 1] in NCHW is the [N, C] block; a channels_last [N, C, 1, 1] is
  // the same bytes, so contiguous() copies only a strided view.
  const Tensor s = scale_in.detach().contiguous();
  const ActivationLayout layout = activation_layout(x, kOp);
  Tensor out = empty_strided_like(x);
  run_forward(x, s, layout, out);
  if (should_record({x_in, scale_in})) {
    SavedScale saved;
    if (scale_in.requires_grad()) saved.x = x;
    if (x_in.requires_grad()) saved.scale = s;
    saved.layout = layout;
    saved.options = TensorOptions(x.dtype()).with_device(x.device());
    record_lambda(
        out, "ChannelScaleBackward", {graph_input(x_in), graph_input(scale_in)},
        [saved](const Tensor& grad_out) { return channel_scale_backward(saved, grad_out); });
  }
  return out;
}

SqueezeExcitation::SqueezeExcitation(int64_t input_channels, int64_t squeeze_channels,
                                     Generator& gen) {
  if (input_channels <= 0 || squeeze_channels <= 0) {
    throw std::invalid_argument("SqueezeExcitation: channels must be positive, got input " +
                                std::to_string(input_channels) + ", squeeze " +
                                std::to_string(squeeze_channels));
  }
  avgpool = register_module("avgpool", std::make_shared<AdaptiveAvgPool2d>(1));
  Conv2dOptions squeeze;
  squeeze.in_channels = input_channels;
  squeeze.out_channels = squeeze_channels;
  fc1 = register_module("fc1", std::make_shared<Conv2d>(squeeze, gen));
  activation = register_module("activation", std::make_shared<ReLU>());
  Conv2dOptions excite;
  excite.in_channels = squeeze_channels;
  excite.out_channels = input_channels;
  fc2 = register_module("fc2", std::make_shared<Conv2d>(excite, gen));
  scale_activation = register_module("scale_activation", std::make_shared<Hardsigmoid>());
}

Tensor SqueezeExcitation::forward(const Tensor& input) {
  Tensor s = avgpool->forward(input);
  s = activation->forward(fc1->forward(s));
  s = scale_activation->forward(fc2->forward(s));
  // Under autocast the 1x1 convolutions return f16; an f32 input then takes
  // the scale in f32, as torch's type promotion of x * s does (the f16 input
  // of MobileNetV3's blocks needs no cast). CPU tensors are never autocast.
  if (input.device().is_cuda() && input.dtype() == DType::f32 && s.dtype() == DType::f16) {
    s = s.to(DType::f32);
  }
  return channel_scale(input, s);
}

std::string SqueezeExcitation::describe() const {
  return "SqueezeExcitation(" + std::to_string(fc1->options().in_channels) + ", " +
         std::to_string(fc1->options().out_channels) + ")";
}

}  // namespace b3
