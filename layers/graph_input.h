// What an autograd node keeps of an op's input.
//
// A Node holds its inputs (autograd/node.h) until the graph is freed, and the
// engine reads from them only what it needs to route gradients: defined(),
// requires_grad(), grad_fn() and shape(); a leaf input (a parameter, the
// image batch) must be the tensor itself, because the engine adds the
// gradient into its .grad. Holding an intermediate tensor itself would also
// hold its storage, and so keep every activation of a training step alive
// until the end of backward, including those no backward reads (a ReLU's
// input when ReLU keeps its output, a residual branch, a BatchNorm output).
// What a backward does read, the op saves explicitly (detached).
//
// graph_input(t) is t for a leaf or an undefined tensor; for an intermediate
// tensor, a handle with t's geometry, dtype, device and grad_fn but no
// storage. The layers pass their inputs through it when they record a node.
#pragma once

#include <memory>

#include "tensor/tensor.h"

namespace b3 {

inline Tensor graph_input(const Tensor& t) {
  if (!t.defined() || !t.grad_fn()) return t;
  auto impl = std::make_shared<TensorImpl>();
  impl->offset = t.offset();
  impl->shape = t.shape();
  impl->strides = t.strides();
  impl->dtype = t.dtype();
  impl->device = t.device();
  impl->requires_grad = true;
  impl->grad_fn = t.grad_fn();
  return Tensor(std::move(impl));
}

}  // namespace b3
