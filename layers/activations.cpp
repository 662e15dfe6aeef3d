// Activations: forward and backward as one pointwise kernel pair each, the
// autograd node saving the input (all three derivatives depend on x only), or
// for ReLU the output, which tells the same (y > 0 exactly where x > 0).
// One op for both devices: only the kernel call differs (activations_cpu.h,
// activations_cuda.h); f32/f64 on the CPU, f32/f16 on CUDA.
#include "layers/activations.h"

#include <stdexcept>
#include <string>

#include "autograd/node.h"
#include "layers/activations_cpu.h"
#include "layers/activations_cuda.h"
#include "layers/graph_input.h"
#include "tensor/cuda_tensor.h"
#include "tensor/ops.h"

namespace b3 {

namespace {

// y = act(x) over numel() elements of dense, identically laid out x and y, on
// their device: pointwise kernels need only that x and y share one layout.
void run_forward(Activation kind, const Tensor& x, Tensor& y) {
  const int64_t n = x.numel();
  if (x.device().is_cuda()) {
    const cuda::Stream stream = cuda::stream_of(x);
    cuda::dispatch_cuda_float(x.dtype(), activation_name(kind), [&](auto tag) {
      using T = decltype(tag);
      const T* in = static_cast<const T*>(x.data_ptr());
      T* out = static_cast<T*>(y.data_ptr());
      switch (kind) {
        case Activation::relu: cuda::relu_forward(in, out, n, stream); break;
        case Activation::hardsigmoid: cuda::hardsigmoid_forward(in, out, n, stream); break;
        case Activation::hardswish: cuda::hardswish_forward(in, out, n, stream); break;
        case Activation::none: break;  // not an op: relu/hardsigmoid/hardswish only
      }
    });
    return;
  }
  dispatch_float(x.dtype(), activation_name(kind), [&](auto tag) {
    using T = decltype(tag);
    const T* in = static_cast<const T*>(x.data_ptr());
    T* out = static_cast<T*>(y.data_ptr());
    switch (kind) {
      case Activation::relu: cpu::relu_forward(in, out, n); break;
      case Activation::hardsigmoid: cpu::hardsigmoid_forward(in, out, n); break;
      case Activation::hardswish: cpu::hardswish_forward(in, out, n); break;
      case Activation::none: break;
    }
  });
}

// grad_in = act'(x) * g, likewise (x: the saved tensor, see activation_backward).
void run_backward(Activation kind, const Tensor& x, const Tensor& g, Tensor& grad_in) {
  const int64_t n = x.numel();
  if (x.device().is_cuda()) {
    const cuda::Stream stream = cuda::stream_of(x);
    cuda::dispatch_cuda_float(x.dtype(), activation_name(kind), [&](auto tag) {
      using T = decltype(tag);
      const T* in = static_cast<const T*>(x.data_ptr());
      const T* go = static_cast<const T*>(g.data_ptr());
      T* gi = static_cast<T*>(grad_in.data_ptr());
      switch (kind) {
        case Activation::relu: cuda::relu_backward(in, go, gi, n, stream); break;
        case Activation::hardsigmoid: cuda::hardsigmoid_backward(in, go, gi, n, stream); break;
        case Activation::hardswish: cuda::hardswish_backward(in, go, gi, n, stream); break;
        case Activation::none: break;
      }
    });
    return;
  }
  dispatch_float(x.dtype(), activation_name(kind), [&](auto tag) {
    using T = decltype(tag);
    const T* in = static_cast<const T*>(x.data_ptr());
    const T* go = static_cast<const T*>(g.data_ptr());
    T* gi = static_cast<T*>(grad_in.data_ptr());
    switch (kind) {
      case Activation::relu: cpu::relu_backward(in, go, gi, n); break;
      case Activation::hardsigmoid: cpu::hardsigmoid_backward(in, go, gi, n); break;
      case Activation::hardswish: cpu::hardswish_backward(in, go, gi, n); break;
      case Activation::none: break;
    }
  });
}

// `x` is the saved tensor: the input, or for ReLU the output (same sign test;
// the CUDA relu_backward, too, only tests its first argument for > 0).
Tensor activation_backward(Activation kind, const Tensor& x, const Tensor& grad_out) {
  const Tensor g =
      align_layout(grad_out.dtype() == x.dtype() ? grad_out : grad_out.to(x.dtype()), x);
  Tensor grad_in = empty_strided_like(x);
  run_backward(kind, x, g, grad_in);
  return grad_in;
}

Tensor activation_forward(Activation kind, const Tensor& input) {
  const char* op = activation_name(kind);
  if (!input.defined()) throw std::invalid_argument(std::string(op) + ": the input is undefined");
  if (runs_on_cuda(op, {input})) {
    cuda::require_cuda_float(op, input);
  } else {
    dispatch_float(input.dtype(), op, [](auto) {});
  }
  const Tensor x = input.is_dense() ? input.detach() : input.detach().contiguous();
  Tensor y = empty_strided_like(x);
  run_forward(kind, x, y);
  if (should_record({input})) {
    // ReLU's derivative is known from its output (y > 0 exactly where x > 0),
    // and the output is what the next layer saves anyway: saving y instead
    // of x lets x (a BatchNorm output) be freed after the forward.
    const Tensor saved = kind == Activation::relu ? y.detach() : x;
    record_lambda(y, std::string(op) + "Backward", {graph_input(input)},
                  [kind, saved](const Tensor& g) {
                    return std::vector<Tensor>{activation_backward(kind, saved, g)};
                  });
  }
  return y;
}

}  // namespace

const char* activation_name(Activation activation) {
  switch (activation) {
    case Activation::none: return "none";
    case Activation::relu: return "relu";
    case Activation::hardsigmoid: return "hardsigmoid";
    case Activation::hardswish: return "hardswish";
  }
  return "activation";
}

std::shared_ptr<Module> activation_module(Activation kind) {
  switch (kind) {
    case Activation::none: return nullptr;
    case Activation::relu: return std::make_shared<ReLU>();
    case Activation::hardsigmoid: return std::make_shared<Hardsigmoid>();
    case Activation::hardswish: return std::make_shared<Hardswish>();
  }
  return nullptr;
}

Tensor relu(const Tensor& x) { return activation_forward(Activation::relu, x); }
Tensor hardsigmoid(const Tensor& x) { return activation_forward(Activation::hardsigmoid, x); }
Tensor hardswish(const Tensor& x) { return activation_forward(Activation::hardswish, x); }

}  // namespace b3
