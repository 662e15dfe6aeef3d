// Reverse-mode autodiff over the recorded graph (Kahn's algorithm on nodes).
//
// 1. Count, for every node reachable from the root, how many edges point to
//    it (how many consumers will send it a gradient).
// 2. Start with the root's node; a node runs once all its consumers have sent
//    their gradient, so each node's backward sees the full sum, once.
// 3. Gradients that reach a leaf (requires_grad, no grad_fn) are added into
//    leaf.grad, creating it in the leaf's own memory format on first use.
#include "autograd/engine.h"

#include <stdexcept>
#include <unordered_map>
#include <vector>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "tensor/ops.h"

namespace b3 {

// Whether a leaf's first gradient can be kept as it is instead of copied: no
// other handle and no other view holds its memory (a node may hand back a
// tensor that aliases its grad_output or a buffer it keeps), it fills that
// memory exactly, and it is laid out as the leaf is (so the optimizer reads
// both in one order). PyTorch's AccumulateGrad steals such a gradient too.
static bool can_adopt(const Tensor& leaf, const Tensor& gradient) {
  const std::shared_ptr<Storage>& storage = gradient.storage();
  return gradient.impl_ptr().use_count() == 1 && storage != nullptr && storage.use_count() == 1 &&
         gradient.offset() == 0 && gradient.is_dense() && storage->nbytes() == gradient.nbytes() &&
         !gradient.requires_grad() && !gradient.grad_fn() && gradient.dtype() == leaf.dtype() &&
         gradient.device() == leaf.device() && gradient.strides() == leaf.strides();
}

// `gradient` is taken (moved from) when it can be adopted.
static void accumulate_into_leaf(const Tensor& leaf, Tensor& gradient) {
  Tensor existing = leaf.grad();
  if (existing.defined()) {
    existing.add_(gradient);
  } else if (can_adopt(leaf, gradient)) {
    leaf.impl()->grad = std::move(gradient);
  } else {
    leaf.impl()->grad = gradient.clone(leaf.suggest_memory_format());
  }
}

static void check_gradient(const Node& node, size_t index, const Tensor& input,
                           const Tensor& gradient) {
  if (gradient.shape() != input.shape()) {
    throw std::logic_error("backward of " + node.name() + ": gradient for input " +
                           std::to_string(index) + " has shape " + shape_str(gradient.shape()) +
                           ", input has " + shape_str(input.shape()));
  }
}

void run_backward(const Tensor& root, const Tensor& grad_output) {
  if (!root.defined()) throw std::invalid_argument("backward: the tensor is undefined");
  if (!root.requires_grad()) {
    throw std::invalid_argument("backward: the tensor " + root.str() +
                                " does not require grad and has no grad_fn");
  }
  Tensor seed = grad_output;
  if (!seed.defined()) {
    if (root.numel() != 1) {
      throw std::invalid_argument(
          "backward: grad_output can be omitted only for a one-element "
          "tensor, this one is " +
          shape_str(root.shape()));
    }
    seed = ones(root.shape(), TensorOptions(root.dtype()).with_device(root.device()));
  } else if (seed.shape() != root.shape()) {
    throw std::invalid_argument("backward: grad_output has shape " + shape_str(seed.shape()) +
                                ", the tensor has " + shape_str(root.shape()));
  } else if (seed.dtype() != root.dtype()) {
    throw std::invalid_argument(std::string("backward: grad_output is ") +
                                dtype_name(seed.dtype()) + ", the tensor is " +
                                dtype_name(root.dtype()) + "; convert it with .to(dtype)");
  }
  NoGradGuard no_grad;  // backward functions must not record a graph of their own
  if (!root.grad_fn()) {
    accumulate_into_leaf(root, seed);
    return;
  }

  // 1. Dependencies: how many gradients each node waits for, and how many
  //    contributions each leaf with grad-ready hooks gets in this backward.
  std::unordered_map<Node*, int> waiting;
  std::unordered_map<const TensorImpl*, int> leaf_waiting;
  std::vector<Node*> stack{root.grad_fn().get()};
  waiting[root.grad_fn().get()] = 0;
  while (!stack.empty()) {
    Node* node = stack.back();
    stack.pop_back();
    for (const Tensor& input : node->inputs) {
      if (input.defined() && !input.grad_fn() && !input.impl()->grad_ready_hooks.empty())
        ++leaf_waiting[input.impl()];
      if (!input.defined() || !input.grad_fn()) continue;
      Node* next = input.grad_fn().get();
      auto [it, inserted] = waiting.try_emplace(next, 0);
      ++it->second;
      if (inserted) stack.push_back(next);
    }
  }

  // 2. Run nodes once all their gradients are in. A node whose consumers all
  //    sent "no gradient" (undefined) is not run, but still releases its
  //    inputs' nodes, which may be waiting for it and get gradients elsewhere.
  std::unordered_map<Node*, Tensor> pending;
  pending[root.grad_fn().get()] = seed;
  std::vector<Node*> ready{root.grad_fn().get()};
  // A node's input is released once per edge, whether a gradient went
  // through it or not; a hooked leaf whose last edge is released is complete.
  auto release = [&](const Tensor& input) {
    if (!input.defined()) return;
    if (!input.grad_fn()) {
      const auto it = leaf_waiting.find(input.impl());
      if (it != leaf_waiting.end() && --it->second == 0) {
        for (const auto& hook : input.impl()->grad_ready_hooks) hook(input);
      }
      return;
    }
    Node* next = input.grad_fn().get();
    if (--waiting[next] == 0) ready.push_back(next);
  };
  while (!ready.empty()) {
    Node* node = ready.back();
    ready.pop_back();
    Tensor gradient;
    if (auto it = pending.find(node); it != pending.end()) {
      gradient = std::move(it->second);
      pending.erase(it);
    }
    if (!gradient.defined()) {
      for (const Tensor& input : node->inputs) release(input);
      continue;
    }
    std::vector<Tensor> input_grads = node->backward(gradient);
    if (input_grads.size() != node->inputs.size()) {
      throw std::logic_error("backward of " + node->name() + " returned " +
                             std::to_string(input_grads.size()) + " gradients for " +
                             std::to_string(node->inputs.size()) + " inputs");
    }
    for (size_t i = 0; i < input_grads.size(); ++i) {
      const Tensor& input = node->inputs[i];
      Tensor& input_grad = input_grads[i];
      if (input.defined() && input.requires_grad() && input_grad.defined()) {
        check_gradient(*node, i, input, input_grad);
        Node* next = input.grad_fn().get();
        if (next == nullptr) {
          accumulate_into_leaf(input, input_grad);
        } else {
          Tensor& slot = pending[next];
          if (!slot.defined()) {
            slot = input_grad;
          } else if (slot.dtype() == input_grad.dtype() && slot.device() == input_grad.device()) {
            // A fresh sum in one pass (slot may alias a tensor a node still
            // uses, so it is not updated in place).
            slot = add(slot, input_grad);
          } else {
            slot = slot.clone();
            slot.add_(input_grad);
          }
        }
      }
      release(input);
    }
  }
}

}  // namespace b3
