// Activations: forward and backward as one pointwise kernel pair each, the
// autograd node saving the input (all three derivatives depend on x only), or
// for ReLU the output, which tells the same (y > 0 exactly where x > 0).
// A CUDA input goes to layers/activations_cuda_op.cpp.
#include "layers/activations.h"

#include "autograd/node.h"
#include "layers/activations_cpu.h"
#include "layers/activations_cuda_op.h"
#include "layers/graph_input.h"
#include "tensor/ops.h"

namespace b3 {

namespace {

enum class Kind { relu, hardsigmoid, hardswish };

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::relu: return "relu";
    case Kind::hardsigmoid: return "hardsigmoid";
    case Kind::hardswish: return "hardswish";
  }
  return "activation";
}

Tensor activation_backward(Kind kind, const Tensor& x, const Tensor& grad_out);

Tensor activation_forward(Kind kind, const Tensor& input) {
  require_cpu(kind_name(kind), {input});
  const Tensor x = input.is_dense() ? input.detach() : input.detach().contiguous();
  Tensor y = empty_like(x);
  y.impl()->strides = x.strides();
  dispatch_float(x.dtype(), kind_name(kind), [&](auto tag) {
    using T = decltype(tag);
    const T* in = static_cast<const T*>(x.data_ptr());
    T* out = static_cast<T*>(y.data_ptr());
    switch (kind) {
      case Kind::relu: cpu::relu_forward(in, out, x.numel()); break;
      case Kind::hardsigmoid: cpu::hardsigmoid_forward(in, out, x.numel()); break;
      case Kind::hardswish: cpu::hardswish_forward(in, out, x.numel()); break;
    }
  });
  if (should_record({input})) {
    // ReLU's derivative is known from its output (y > 0 exactly where x > 0),
    // and the output is what the next layer saves anyway: saving y instead
    // of x lets x (a BatchNorm output) be freed after the forward.
    const Tensor saved = kind == Kind::relu ? y.detach() : x;
    record_lambda(y, std::string(kind_name(kind)) + "Backward", {graph_input(input)},
                  [kind, saved](const Tensor& g) {
                    return std::vector<Tensor>{activation_backward(kind, saved, g)};
                  });
  }
  return y;
}

// `x` is the saved tensor: the input, or for ReLU the output (same sign test).
Tensor activation_backward(Kind kind, const Tensor& x, const Tensor& grad_out) {
  const Tensor g = align_layout(grad_out, x);
  Tensor grad_in = empty_like(x);
  grad_in.impl()->strides = x.strides();
  dispatch_float(x.dtype(), kind_name(kind), [&](auto tag) {
    using T = decltype(tag);
    const T* in = static_cast<const T*>(x.data_ptr());
    const T* go = static_cast<const T*>(g.data_ptr());
    T* gi = static_cast<T*>(grad_in.data_ptr());
    switch (kind) {
      case Kind::relu: cpu::relu_backward(in, go, gi, x.numel()); break;
      case Kind::hardsigmoid: cpu::hardsigmoid_backward(in, go, gi, x.numel()); break;
      case Kind::hardswish: cpu::hardswish_backward(in, go, gi, x.numel()); break;
    }
  });
  return grad_in;
}

bool on_cuda(const Tensor& x) { return x.defined() && x.device().is_cuda(); }

}  // namespace

Tensor relu(const Tensor& x) {
  if (on_cuda(x)) return cuda_op::relu(x);
  return activation_forward(Kind::relu, x);
}
Tensor hardsigmoid(const Tensor& x) {
  if (on_cuda(x)) return cuda_op::hardsigmoid(x);
  return activation_forward(Kind::hardsigmoid, x);
}
Tensor hardswish(const Tensor& x) {
  if (on_cuda(x)) return cuda_op::hardswish(x);
  return activation_forward(Kind::hardswish, x);
}

}  // namespace b3
