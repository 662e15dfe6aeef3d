// BatchNorm2d on CUDA: argument checks, the launcher calls and the autograd
// node. The math is in layers/batchnorm2d.h and layers/batchnorm2d_cuda.h.
//
// Forward: the training launcher computes the batch mean and biased variance
// per channel, writes save_mean and save_invstd = 1 / sqrt(var + eps), blends
// the running statistics in place (running_var with var * M / (M - 1)) and
// normalizes; the inference launcher takes mean and invstd from the running
// statistics. save_mean/save_invstd (f32 [C]) are kept by the node, so the
// backward launcher gets the statistics that normalized, as the CPU node does
// with its mean/invstd vectors. Nothing here reads device memory on the host.
//
// The reductions use a workspace of batch_norm_workspace_bytes(layout), an f32
// tensor allocated per call from the caching allocator (same size every step,
// so the same block comes back).
//
// With an activation (batch_norm_activation, layers/batchnorm_activation.h)
// the fused launchers of layers/batchnorm_activation_cuda.h run instead: the
// same statistics, then act(y) written in the one output pass; the backward
// recomputes y from the saved x (it needs the bias for that) and applies
// act'(y) inside BatchNorm's backward passes.
#include "layers/batchnorm2d_cuda_op.h"

#include <stdexcept>
#include <string>
#include <vector>

#include "autograd/node.h"
#include "layers/batchnorm2d.h"
#include "layers/batchnorm2d_cuda.h"
#include "layers/batchnorm_activation_cuda.h"
#include "layers/graph_input.h"
#include "tensor/activation_layout.h"
#include "tensor/cuda_tensor.h"
#include "tensor/ops.h"

namespace b3::cuda_op {

namespace {

constexpr const char* kOp = "batch_norm2d";

// num_batches_tracked += 1. On the host this is a plain store. On a CUDA
// device b3 has no i64 kernel, so the one value makes a round trip through
// the host, which waits for the device's stream: a synchronization that a
// training step should not have (keep the counter on the host, or give b3 an
// i64 increment kernel, to avoid it).
void increment_counter(const Tensor& num_batches_tracked) {
  Tensor counter = num_batches_tracked;
  if (counter.device().is_cpu()) {
    counter.data<int64_t>()[0] += 1;  // one element; its offset is already in data_ptr()
    return;
  }
  Tensor host = counter.detach().to(Device::cpu()).contiguous();
  host.data<int64_t>()[0] += 1;
  counter.copy_(host);
}

// A float pointer into a defined per-channel tensor, or null.
const float* channel_pointer(const Tensor& t) {
  return t.defined() ? static_cast<const float*>(t.data_ptr()) : nullptr;
}
float* mutable_channel_pointer(Tensor& t) {
  return t.defined() ? static_cast<float*>(t.data_ptr()) : nullptr;
}

// An f32 [C] tensor on `device`.
Tensor channel_buffer(int64_t channels, const Device& device) {
  return empty({channels}, TensorOptions(DType::f32).with_device(device));
}

// Device memory for the launchers' reductions over `layout` (f32 elements,
// so that it is aligned for floats).
Tensor reduction_workspace(const ActivationLayout& layout, const Device& device) {
  const size_t bytes = cuda::batch_norm_workspace_bytes(layout);
  const auto floats = static_cast<int64_t>((bytes + sizeof(float) - 1) / sizeof(float));
  return empty({floats}, TensorOptions(DType::f32).with_device(device));
}

const char* node_name(NormActivation activation) {
  switch (activation) {
    case NormActivation::relu: return "BatchNorm2dReluBackward";
    case NormActivation::hardswish: return "BatchNorm2dHardswishBackward";
    case NormActivation::none: break;
  }
  return "BatchNorm2dBackward";
}

class BatchNorm2dCudaBackward final : public Node {
 public:
  BatchNorm2dCudaBackward(Tensor x, Tensor weight, Tensor bias, Tensor save_mean,
                          Tensor save_invstd, ActivationLayout layout, bool batch_statistics,
                          NormActivation activation)
      : Node(node_name(activation)),
        x_(std::move(x)),
        weight_(std::move(weight)),
        bias_(std::move(bias)),
        save_mean_(std::move(save_mean)),
        save_invstd_(std::move(save_invstd)),
        layout_(layout),
        batch_statistics_(batch_statistics),
        activation_(activation) {}

  // inputs: {input, weight, bias}; weight and bias may be undefined.
  std::vector<Tensor> backward(const Tensor& grad_output) override {
    const bool need_input = inputs[0].requires_grad();
    const bool need_weight = inputs[1].defined() && inputs[1].requires_grad();
    const bool need_bias = inputs[2].defined() && inputs[2].requires_grad();
    std::vector<Tensor> grads(3);
    if (!need_input && !need_weight && !need_bias) return grads;
    const Device device = x_.device();
    const int64_t channels = layout_.channels;
    if (layout_.numel() == 0) {  // sums over no values: 0, as the CPU path
      if (need_input) grads[0] = empty_strided_like(x_);
      if (need_weight) grads[1] = zeros({channels}, TensorOptions(DType::f32).with_device(device));
      if (need_bias) grads[2] = zeros({channels}, TensorOptions(DType::f32).with_device(device));
      return grads;
    }
    Tensor g = grad_output.detach();
    if (g.dtype() != x_.dtype()) g = g.to(x_.dtype());
    g = align_layout(g, x_);
    if (need_input) grads[0] = empty_strided_like(x_);
    if (need_weight) grads[1] = channel_buffer(channels, device);
    if (need_bias) grads[2] = channel_buffer(channels, device);
    Tensor workspace = reduction_workspace(layout_, device);
    const cuda::Stream stream = cuda::stream_of(x_);
    cuda::dispatch_cuda_float(x_.dtype(), kOp, [&](auto tag) {
      using T = decltype(tag);
      T* grad_x = grads[0].defined() ? static_cast<T*>(grads[0].data_ptr()) : nullptr;
      if (activation_ == NormActivation::none) {
        cuda::batch_norm_backward(
            static_cast<const T*>(x_.data_ptr()), static_cast<const T*>(g.data_ptr()),
            channel_pointer(weight_), channel_pointer(save_mean_), channel_pointer(save_invstd_),
            grad_x, mutable_channel_pointer(grads[1]), mutable_channel_pointer(grads[2]), layout_,
            batch_statistics_, workspace.data_ptr(), workspace.nbytes(), stream);
      } else {
        cuda::batch_norm_activation_backward(
            static_cast<const T*>(x_.data_ptr()), static_cast<const T*>(g.data_ptr()),
            channel_pointer(weight_), channel_pointer(bias_), channel_pointer(save_mean_),
            channel_pointer(save_invstd_), grad_x, mutable_channel_pointer(grads[1]),
            mutable_channel_pointer(grads[2]), layout_, batch_statistics_, activation_,
            workspace.data_ptr(), workspace.nbytes(), stream);
      }
    });
    return grads;
  }

 private:
  Tensor x_;            // the input, detached, dense in layout_
  Tensor weight_;       // detached dense f32 [C], or undefined (weight 1)
  Tensor bias_;         // detached dense f32 [C] or undefined; kept only with an activation
  Tensor save_mean_;    // f32 [C]: the mean that normalized (batch or running)
  Tensor save_invstd_;  // f32 [C]: 1 / sqrt(var + eps) of the var that normalized
  ActivationLayout layout_;
  bool batch_statistics_;  // training: gradients flow through mean and var
  NormActivation activation_;
};

}  // namespace

Tensor batch_norm2d(const Tensor& input, const Tensor& weight, const Tensor& bias,
                    const Tensor& running_mean, const Tensor& running_var,
                    const Tensor& num_batches_tracked, bool training, double momentum, double eps) {
  return cuda_op::batch_norm_activation(input, weight, bias, running_mean, running_var,
                                        num_batches_tracked, training, momentum, eps,
                                        NormActivation::none);
}

Tensor batch_norm_activation(const Tensor& input, const Tensor& weight, const Tensor& bias,
                             const Tensor& running_mean, const Tensor& running_var,
                             const Tensor& num_batches_tracked, bool training, double momentum,
                             double eps, NormActivation activation) {
  const bool fused = activation != NormActivation::none;
  check_batch_norm_arguments(input, weight, bias, running_mean, running_var, num_batches_tracked,
                             training, momentum, eps);
  const Tensor x = dense_activation(input.detach());
  const ActivationLayout layout = activation_layout(x, kOp);
  const Device device = x.device();
  // weight and bias are read as dense [C] blocks (a copy only for a strided view).
  const Tensor w = weight.defined() ? weight.detach().contiguous() : Tensor();
  const Tensor b = bias.defined() ? bias.detach().contiguous() : Tensor();
  Tensor running_mean_data = running_mean.defined() ? running_mean.detach() : Tensor();
  Tensor running_var_data = running_var.defined() ? running_var.detach() : Tensor();

  Tensor y = empty_strided_like(x);
  Tensor save_mean = channel_buffer(layout.channels, device);
  Tensor save_invstd = channel_buffer(layout.channels, device);
  const cuda::Stream stream = cuda::stream_of(x);
  if (training) {
    // An empty batch does nothing (the running statistics stay), as on the CPU.
    if (layout.numel() > 0) {
      Tensor workspace = reduction_workspace(layout, device);
      cuda::dispatch_cuda_float(x.dtype(), kOp, [&](auto tag) {
        using T = decltype(tag);
        const T* x_data = static_cast<const T*>(x.data_ptr());
        T* y_data = static_cast<T*>(y.data_ptr());
        if (fused) {
          cuda::batch_norm_activation_forward_training(
              x_data, channel_pointer(w), channel_pointer(b),
              mutable_channel_pointer(running_mean_data), mutable_channel_pointer(running_var_data),
              y_data, mutable_channel_pointer(save_mean), mutable_channel_pointer(save_invstd),
              layout, momentum, eps, activation, workspace.data_ptr(), workspace.nbytes(), stream);
        } else {
          cuda::batch_norm_forward_training(
              x_data, channel_pointer(w), channel_pointer(b),
              mutable_channel_pointer(running_mean_data), mutable_channel_pointer(running_var_data),
              y_data, mutable_channel_pointer(save_mean), mutable_channel_pointer(save_invstd),
              layout, momentum, eps, workspace.data_ptr(), workspace.nbytes(), stream);
        }
      });
    }
    if (num_batches_tracked.defined()) increment_counter(num_batches_tracked);
  } else {
    cuda::dispatch_cuda_float(x.dtype(), kOp, [&](auto tag) {
      using T = decltype(tag);
      const T* x_data = static_cast<const T*>(x.data_ptr());
      T* y_data = static_cast<T*>(y.data_ptr());
      if (fused) {
        cuda::batch_norm_activation_forward_inference(
            x_data, channel_pointer(w), channel_pointer(b), channel_pointer(running_mean_data),
            channel_pointer(running_var_data), y_data, mutable_channel_pointer(save_mean),
            mutable_channel_pointer(save_invstd), layout, eps, activation, stream);
      } else {
        cuda::batch_norm_forward_inference(
            x_data, channel_pointer(w), channel_pointer(b), channel_pointer(running_mean_data),
            channel_pointer(running_var_data), y_data, mutable_channel_pointer(save_mean),
            mutable_channel_pointer(save_invstd), layout, eps, stream);
      }
    });
  }
  if (should_record({input, weight, bias})) {
    auto node = std::make_shared<BatchNorm2dCudaBackward>(
        x, w, fused ? b : Tensor(), std::move(save_mean), std::move(save_invstd), layout, training,
        activation);
    record(y, std::move(node), {graph_input(input), weight, bias});
  }
  return y;
}

}  // namespace b3::cuda_op
