// Recording ops into the autograd graph.
#include "autograd/node.h"

#include "autograd/grad_mode.h"

namespace b3 {

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
  return record(std::move(output), std::make_shared<LambdaNode>(std::move(name), std::move(backward)),
                std::move(inputs));
}

}  // namespace b3
