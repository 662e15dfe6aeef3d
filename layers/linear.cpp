// Linear: argument checks, the dispatch by device (CUDA tensors go to
// linear_cuda_op.cpp, after autocast), the CPU autograd node (saving the input
// and the weight, both detached), and the Module with PyTorch's default
// initialization.
#include "layers/linear.h"

#include <cmath>
#include <initializer_list>
#include <sstream>
#include <stdexcept>

#include "autograd/node.h"
#include "layers/graph_input.h"
#include "layers/linear_cuda_op.h"
#include "tensor/autocast.h"
#include "tensor/cuda_tensor.h"
#include "tensor/ops.h"

namespace b3 {

namespace {

// True when any defined tensor lives on a CUDA device: the op then runs there
// (or says clearly why it cannot, e.g. a weight left on the CPU).
bool any_on_cuda(std::initializer_list<Tensor> tensors) {
  for (const Tensor& t : tensors) {
    if (t.defined() && t.device().is_cuda()) return true;
  }
  return false;
}

// The dtypes allowed depend on the device: f32/f64 on the CPU, f32/f16 on CUDA.
void check_arguments(const Tensor& input, const Tensor& weight, const Tensor& bias, bool on_cuda) {
  if (!input.defined() || !weight.defined()) {
    throw std::invalid_argument("linear: input and weight must be defined tensors");
  }
  if (!on_cuda) require_cpu("linear", {input, weight, bias});
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

}  // namespace

Tensor linear(const Tensor& input, const Tensor& weight, const Tensor& bias) {
  if (any_on_cuda({input, weight, bias})) {
    cuda::require_same_cuda_device("linear", {input, weight, bias});
    // Autocast first, as torch.autocast does: under an AutocastGuard the op and
    // its graph see f16 copies (recorded casts, so f32 leaves get f32 gradients).
    const Tensor x = autocast_cast(input);
    const Tensor w = autocast_cast(weight);
    const Tensor b = autocast_cast(bias);
    check_arguments(x, w, b, true);
    return cuda_op::linear(x, w, b);
  }
  check_arguments(input, weight, bias, false);
  const Tensor x = dense_rows(input);
  const Tensor w = dense_rows(weight);
  const Tensor b = bias.defined() ? dense_rows(bias) : Tensor();
  Tensor out = empty({x.size(0), w.size(0)}, TensorOptions(x.dtype()));
  cpu::linear_forward(x, w, b, out);

  std::vector<Tensor> inputs{input, weight};
  if (bias.defined()) inputs.push_back(bias);
  if (should_record(inputs)) {
    inputs[0] = graph_input(input);  // the node keeps no storage of an intermediate input
    const bool need_input = input.requires_grad();
    const bool need_weight = weight.requires_grad();
    const bool need_bias = bias.defined() && bias.requires_grad();
    const bool has_bias = bias.defined();
    record_lambda(out, "LinearBackward", inputs,
                  [x, w, need_input, need_weight, need_bias, has_bias](const Tensor& grad_out) {
                    const Tensor g = dense_rows(grad_out);
                    Tensor grad_input = need_input ? empty(x.shape(), x.dtype()) : Tensor();
                    Tensor grad_weight = need_weight ? empty(w.shape(), w.dtype()) : Tensor();
                    Tensor grad_bias = need_bias ? empty({w.size(0)}, w.dtype()) : Tensor();
                    cpu::linear_backward(g, x, w, grad_input, grad_weight, grad_bias);
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
