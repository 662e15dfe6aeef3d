// Linear: argument checks, one op and one autograd node for both devices
// (the device branch is at the kernel call: linear_cpu.h or linear_cuda.h,
// after autocast on CUDA), and the Module with PyTorch's default
// initialization. The node saves the input only when the weight needs its
// gradient and the weight only when the input does, both detached.
#include "layers/linear.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

#include "autograd/node.h"
#include "layers/graph_input.h"
#include "layers/linear_cpu.h"
#include "layers/linear_cuda.h"
#include "tensor/autocast.h"
#include "tensor/cuda_tensor.h"
#include "tensor/ops.h"

namespace b3 {

namespace {

// The dtypes allowed depend on the device: f32/f64 on the CPU, f32/f16 on CUDA.
void check_arguments(const Tensor& input, const Tensor& weight, const Tensor& bias, bool on_cuda) {
  if (!input.defined() || !weight.defined()) {
    throw std::invalid_argument("linear: input and weight must be defined tensors");
  }
  if (weight.dim() != 2) {
    throw std::invalid_argument("linear: weight must be 2-D [out_features, in_features], got " +
                                shape_str(weight.shape()));
  }
  if (input.dim() != 2) {
    throw std::invalid_argument("linear: input must be 2-D [N, in_features], got " +
                                shape_str(input.shape()) + " (flatten it first)");
  }
  if (input.size(1) != weight.size(1)) {
    throw std::invalid_argument("linear: input has " + std::to_string(input.size(1)) +
                                " features, weight expects " + std::to_string(weight.size(1)) +
                                " (input " + shape_str(input.shape()) + ", weight " +
                                shape_str(weight.shape()) + ")");
  }
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != weight.size(0))) {
    throw std::invalid_argument("linear: bias must be [" + std::to_string(weight.size(0)) +
                                "] to match weight " + shape_str(weight.shape()) + ", got " +
                                shape_str(bias.shape()));
  }
  if (weight.dtype() != input.dtype() || (bias.defined() && bias.dtype() != input.dtype())) {
    throw std::invalid_argument(
        std::string("linear: dtypes differ: input ") + dtype_name(input.dtype()) + ", weight " +
        dtype_name(weight.dtype()) +
        (bias.defined() ? std::string(", bias ") + dtype_name(bias.dtype()) : std::string()));
  }
  if (on_cuda) {
    if (input.dtype() != DType::f32 && input.dtype() != DType::f16) {
      throw std::invalid_argument(std::string("linear: dtype ") + dtype_name(input.dtype()) +
                                  " is not supported on CUDA (use f32, or f16 e.g. through "
                                  "AutocastGuard)");
    }
  } else {
    dispatch_float(input.dtype(), "linear", [](auto) {});
  }
}

// A detached, dense row-major copy (or the tensor itself when it already is).
Tensor dense_rows(const Tensor& t) { return t.detach().contiguous(); }

// y = x W^T + b on x's device.
void run_forward(const LinearGeometry& g, const Tensor& x, const Tensor& w, const Tensor& b,
                 Tensor& y) {
  if (x.device().is_cuda()) {
    cuda::linear_forward(g, x.data_ptr(), w.data_ptr(), b.defined() ? b.data_ptr() : nullptr,
                         y.data_ptr(), cuda::stream_of(x));
    return;
  }
  dispatch_float(g.dtype, "linear", [&](auto tag) {
    using T = decltype(tag);
    cpu::linear_forward(g, static_cast<const T*>(x.data_ptr()), static_cast<const T*>(w.data_ptr()),
                        pointer_or_null<T>(b), static_cast<T*>(y.data_ptr()));
  });
}

// Whichever of grad_x, grad_w, grad_b is defined, on gy's device.
void run_backward(const LinearGeometry& g, const Tensor& x, const Tensor& w, const Tensor& gy,
                  Tensor& grad_x, Tensor& grad_w, Tensor& grad_b) {
  if (gy.device().is_cuda()) {
    auto pointer = [](Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; };
    cuda::linear_backward(g, x.defined() ? x.data_ptr() : nullptr,
                          w.defined() ? w.data_ptr() : nullptr, gy.data_ptr(), pointer(grad_x),
                          pointer(grad_w), pointer(grad_b), cuda::stream_of(gy));
    return;
  }
  dispatch_float(g.dtype, "linear backward", [&](auto tag) {
    using T = decltype(tag);
    cpu::linear_backward(g, pointer_or_null<T>(x), pointer_or_null<T>(w),
                         static_cast<const T*>(gy.data_ptr()), mutable_pointer_or_null<T>(grad_x),
                         mutable_pointer_or_null<T>(grad_w), mutable_pointer_or_null<T>(grad_b));
  });
}

}  // namespace

Tensor linear(const Tensor& input_arg, const Tensor& weight_arg, const Tensor& bias_arg) {
  const bool on_cuda = runs_on_cuda("linear", {input_arg, weight_arg, bias_arg});
  // Autocast first, as torch.autocast does: under an AutocastGuard a CUDA op
  // and its graph see f16 copies (recorded casts, so f32 leaves get f32
  // gradients); CPU tensors are never cast.
  const Tensor input = autocast_cast(input_arg);
  const Tensor weight = autocast_cast(weight_arg);
  const Tensor bias = autocast_cast(bias_arg);
  check_arguments(input, weight, bias, on_cuda);
  const Tensor x = dense_rows(input);
  const Tensor w = dense_rows(weight);
  const Tensor b = bias.defined() ? dense_rows(bias) : Tensor();

  LinearGeometry geometry;
  geometry.batch = x.size(0);
  geometry.in_features = x.size(1);
  geometry.out_features = w.size(0);
  geometry.dtype = x.dtype();
  const TensorOptions options = TensorOptions(x.dtype()).with_device(x.device());
  Tensor out = empty({geometry.batch, geometry.out_features}, options);
  run_forward(geometry, x, w, b, out);

  std::vector<Tensor> inputs{input, weight};
  if (bias.defined()) inputs.push_back(bias);
  if (should_record(inputs)) {
    // The node keeps no storage of an intermediate input (e.g. an autocast copy).
    for (Tensor& t : inputs) t = graph_input(t);
    const bool need_input = input.requires_grad();
    const bool need_weight = weight.requires_grad();
    const bool need_bias = bias.defined() && bias.requires_grad();
    const bool has_bias = bias.defined();
    // x is read only for grad_weight, w only for grad_input.
    const Tensor saved_x = need_weight ? x : Tensor();
    const Tensor saved_w = need_input ? w : Tensor();
    record_lambda(
        out, "LinearBackward", inputs,
        [geometry, options, saved_x, saved_w, need_input, need_weight, need_bias,
         has_bias](const Tensor& grad_out) {
          if (options.device.is_cuda()) {
            cuda::require_same_cuda_device("linear backward", {grad_out});
          }
          const Tensor converted =
              grad_out.dtype() == geometry.dtype ? grad_out : grad_out.to(geometry.dtype);
          const Tensor g = dense_rows(converted);
          Tensor grad_input =
              need_input ? empty({geometry.batch, geometry.in_features}, options) : Tensor();
          Tensor grad_weight = need_weight
                                   ? empty({geometry.out_features, geometry.in_features}, options)
                                   : Tensor();
          Tensor grad_bias = need_bias ? empty({geometry.out_features}, options) : Tensor();
          run_backward(geometry, saved_x, saved_w, g, grad_input, grad_weight, grad_bias);
          std::vector<Tensor> grads{grad_input, grad_weight};
          if (has_bias) grads.push_back(grad_bias);
          return grads;
        });
  }
  return out;
}

Linear::Linear(int64_t in_features, int64_t out_features, bool with_bias, Generator& gen)
    : in_features_(in_features), out_features_(out_features) {
  if (in_features <= 0 || out_features <= 0) {
    throw std::invalid_argument("Linear: in_features and out_features must be positive, got " +
                                std::to_string(in_features) + " and " +
                                std::to_string(out_features));
  }
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  Tensor w = empty({out_features, in_features});
  weight = register_parameter("weight", uniform_(w, -bound, bound, gen));
  if (with_bias) {
    Tensor b = empty({out_features});
    bias = register_parameter("bias", uniform_(b, -bound, bound, gen));
  }
}

std::string Linear::describe() const {
  std::ostringstream s;
  s << "Linear(" << in_features_ << ", " << out_features_ << (bias.defined() ? "" : ", no bias")
    << ")";
  return s.str();
}

}  // namespace b3
