// The backward engine: walks the graph from a tensor back to the leaves in
// reverse topological order, calling each Node's backward once with the sum
// of the gradients that reached it, and accumulating (+=) into leaf .grad.
#pragma once

#include "tensor/tensor.h"

namespace b3 {

// dL/d(root) = grad_output (ones for a one-element root when undefined).
void run_backward(const Tensor& root, const Tensor& grad_output);

}  // namespace b3
