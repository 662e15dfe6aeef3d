// Node: one recorded operation in the autograd graph.
//
// When an op runs on inputs that require grad (and grad mode is on), it makes
// a Node that remembers the inputs and whatever it needs for the backward
// (saved tensors), and sets it as the output's grad_fn. backward() receives
// dL/d(output) and returns dL/d(input) for each input, in order (undefined
// for inputs that do not require grad).
//
// Saved tensors must never hold the op's own output as a live handle (that
// would be a reference cycle output -> node -> output): save output.detach().
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace b3 {

class Node {
 public:
  explicit Node(std::string name) : name_(std::move(name)) {}
  // Releases the graph below this node iteratively: a chain of 100,000 ops
  // would otherwise be freed by 100,000 nested destructor calls and overflow
  // the stack (node -> input tensor -> its grad_fn -> ...).
  virtual ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  const std::string& name() const { return name_; }
  virtual std::vector<Tensor> backward(const Tensor& grad_output) = 0;

  // Writes images [first, first + count) (indices along dim 0) of this node's
  // output into `out`, dense in the output's own layout and bit for bit what
  // the forward returned; thread-safe, and serial (safe to call from inside
  // a parallel region).
  using OutputReplay = std::function<void(int64_t first, int64_t count, void* out)>;
  // A node that can rebuild its output from what it keeps for its own
  // backward (BatchNorm + activation: its input and per-channel constants)
  // returns that replay when `output` is exactly its output (the same
  // storage, shape and dense layout), else an empty function. A consumer
  // that reads the output only in its backward can then save the replay
  // instead of the output, so that the output's memory is freed when the
  // forward drops it. The replay owns what it reads (no reference to the node).
  virtual OutputReplay output_replay(const Tensor& output) const {
    (void)output;
    return {};
  }

  // dL/d(output) formed on demand: writes rows [first, first + count) of the
  // gradient into `out`, dense in the output's layout (for an NHWC
  // activation a row is one pixel's C values); thread-safe and serial.
  using GradientRows = std::function<void(int64_t first, int64_t count, void* out)>;
  // A node that can read its output gradient slice by slice as it works
  // (a 1x1 convolution on the CPU) says so for `output` (exactly its
  // output); backward_from_rows is then its backward, the gradients
  // backward() would return for the gradient the rows describe. A consumer
  // whose backward produces that gradient elementwise (BatchNorm's input
  // gradient) can absorb the node: it runs the node's backward itself and
  // dL/d(output) is never stored (layers/batchnorm2d.cpp).
  virtual bool takes_gradient_rows(const Tensor& output) const {
    (void)output;
    return false;
  }
  virtual std::vector<Tensor> backward_from_rows(const GradientRows& rows);

  std::vector<Tensor> inputs;  // the op's inputs, in the order backward() answers

 private:
  std::string name_;
};

// A Node whose backward is a lambda: enough for small ops (views, casts, adds).
class LambdaNode final : public Node {
 public:
  using Backward = std::function<std::vector<Tensor>(const Tensor& grad_output)>;
  LambdaNode(std::string name, Backward backward)
      : Node(std::move(name)), fn_(std::move(backward)) {}
  std::vector<Tensor> backward(const Tensor& grad_output) override { return fn_(grad_output); }

 private:
  Backward fn_;
};

// True when grad mode is on and any of `inputs` requires grad: the op must record.
bool should_record(std::initializer_list<Tensor> inputs);
bool should_record(const std::vector<Tensor>& inputs);

// Makes `node` the grad_fn of `output` (which then requires grad), with `inputs`
// as its inputs. Returns output for chaining.
Tensor record(Tensor output, std::shared_ptr<Node> node, std::vector<Tensor> inputs);

// record() with a LambdaNode.
Tensor record_lambda(Tensor output, std::string name, std::vector<Tensor> inputs,
                     LambdaNode::Backward backward);

}  // namespace b3
