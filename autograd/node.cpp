// Recording ops into the autograd graph.
#include "autograd/node.h"

#include <stdexcept>

#include "autograd/grad_mode.h"

namespace b3 {

std::vector<Tensor> Node::backward_from_rows(const GradientRows& rows) {
  (void)rows;
  throw std::logic_error(name_ + " does not take its output gradient as rows");
}

Node::~Node() {
  // Detach, from every input this node holds the last reference to, the
  // grad_fn that only that input keeps alive, and free those nodes one by one
  // from a local stack instead of letting each destructor recurse into the next.
  std::vector<std::shared_ptr<Node>> orphans;
  auto adopt_grad_fns = [&orphans](std::vector<Tensor>& tensors) {
    for (Tensor& t : tensors) {
      TensorImpl* impl = t.impl();
      if (impl != nullptr && t.impl_ptr().use_count() == 1 && impl->grad_fn &&
          impl->grad_fn.use_count() == 1) {
        orphans.push_back(std::move(impl->grad_fn));
      }
    }
    tensors.clear();
  };
  adopt_grad_fns(inputs);
  while (!orphans.empty()) {
    std::shared_ptr<Node> node = std::move(orphans.back());
    orphans.pop_back();
    adopt_grad_fns(node->inputs);
    // `node` is freed here with no inputs left, so its destructor does not recurse.
  }
}

bool should_record(std::initializer_list<Tensor> inputs) {
  if (!GradMode::is_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

bool should_record(const std::vector<Tensor>& inputs) {
  if (!GradMode::is_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

Tensor record(Tensor output, std::shared_ptr<Node> node, std::vector<Tensor> inputs) {
  node->inputs = std::move(inputs);
  output.set_grad_fn(std::move(node));
  return output;
}

Tensor record_lambda(Tensor output, std::string name, std::vector<Tensor> inputs,
                     LambdaNode::Backward backward) {
  return record(std::move(output),
                std::make_shared<LambdaNode>(std::move(name), std::move(backward)),
                std::move(inputs));
}

}  // namespace b3
