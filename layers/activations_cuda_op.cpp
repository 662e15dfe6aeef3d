// Activations on CUDA: the input made dense (any order of dims: the kernels
// are pointwise over numel() elements, so x, y and the gradients only need to
// share one layout), one launcher call each way, and an autograd node that
// saves the input, or for ReLU the output (y > 0 exactly where x > 0, and the
// CUDA relu_backward only tests its first argument for > 0), as the CPU path.
#include "layers/activations_cuda_op.h"

#include <string>
#include <vector>

#include "autograd/node.h"
#include "layers/activations_cuda.h"
#include "layers/graph_input.h"
#include "tensor/cuda_tensor.h"
#include "tensor/ops.h"

namespace b3::cuda_op {

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

// Calls fn(float{}) or fn(Half{}) for an f32 or f16 dtype (checked before).
template <typename Fn>
void dispatch_cuda_float(DType dtype, Fn&& fn) {
  if (dtype == DType::f16) {
    fn(Half{});
  } else {
    fn(float{});
  }
}

// A new tensor on x's device with exactly x's (dense) strides.
Tensor empty_with_layout(const Tensor& x) {
  Tensor out = empty_like(x);
  out.impl()->strides = x.strides();
  return out;
}

// `x` is the saved tensor: the input, or for ReLU the output.
Tensor activation_backward(Kind kind, const Tensor& x, const Tensor& grad_out) {
  Tensor g = grad_out.detach();
  if (g.dtype() != x.dtype()) g = g.to(x.dtype());
  g = align_layout(g, x);
  Tensor grad_in = empty_with_layout(x);
  const cuda::Stream stream = cuda::stream_of(x);
  dispatch_cuda_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* in = static_cast<const T*>(x.data_ptr());
    const T* go = static_cast<const T*>(g.data_ptr());
    T* gi = static_cast<T*>(grad_in.data_ptr());
    switch (kind) {
      case Kind::relu: cuda::relu_backward(in, go, gi, x.numel(), stream); break;
      case Kind::hardsigmoid: cuda::hardsigmoid_backward(in, go, gi, x.numel(), stream); break;
      case Kind::hardswish: cuda::hardswish_backward(in, go, gi, x.numel(), stream); break;
    }
  });
  return grad_in;
}

Tensor activation_forward(Kind kind, const Tensor& input) {
  const char* op = kind_name(kind);
  cuda::require_same_cuda_device(op, {input});
  cuda::require_cuda_float(op, input);
  const Tensor x = input.is_dense() ? input.detach() : input.detach().contiguous();
  Tensor y = empty_with_layout(x);
  const cuda::Stream stream = cuda::stream_of(x);
  dispatch_cuda_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* in = static_cast<const T*>(x.data_ptr());
    T* out = static_cast<T*>(y.data_ptr());
    switch (kind) {
      case Kind::relu: cuda::relu_forward(in, out, x.numel(), stream); break;
      case Kind::hardsigmoid: cuda::hardsigmoid_forward(in, out, x.numel(), stream); break;
      case Kind::hardswish: cuda::hardswish_forward(in, out, x.numel(), stream); break;
    }
  });
  if (should_record({input})) {
    const Tensor saved = kind == Kind::relu ? y.detach() : x;
    record_lambda(y, std::string(op) + "Backward", {graph_input(input)},
                  [kind, saved](const Tensor& g) {
                    return std::vector<Tensor>{activation_backward(kind, saved, g)};
                  });
  }
  return y;
}

}  // namespace

Tensor relu(const Tensor& x) { return activation_forward(Kind::relu, x); }
Tensor hardsigmoid(const Tensor& x) { return activation_forward(Kind::hardsigmoid, x); }
Tensor hardswish(const Tensor& x) { return activation_forward(Kind::hardswish, x); }

}  // namespace b3::cuda_op
