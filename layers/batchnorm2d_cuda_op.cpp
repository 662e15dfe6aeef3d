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
#include "layers/batchnorm2d_cuda.h"
#include "layers/batchnorm_activation_cuda.h"
#include "layers/graph_input.h"
#include "tensor/cuda_tensor.h"
#include "tensor/ops.h"

namespace b3::cuda_op {

namespace {

constexpr const char* kOp = "batch_norm2d";

// Calls fn(float{}) or fn(Half{}) for an f32 or f16 dtype (checked before).
template <typename Fn>
void dispatch_cuda_float(DType dtype, Fn&& fn) {
  if (dtype == DType::f16) {
    fn(Half{});
  } else {
    fn(float{});
  }
}

// A per-channel argument ([C], f32 on CUDA whatever the input's dtype) or undefined.
void check_channel_tensor(const Tensor& t, const char* name, const Tensor& input) {
  if (!t.defined()) return;
  const int64_t channels = input.size(1);
  if (t.dim() != 1) {
    throw std::invalid_argument(std::string(kOp) + ": " + name + " must be 1-D [C] with C = " +
                                std::to_string(channels) + ", got shape " + shape_str(t.shape()));
  }
  if (t.size(0) != channels) {
    throw std::invalid_argument(std::string(kOp) + ": input has " + std::to_string(channels) +
                                " channels, " + name + " has " + std::to_string(t.size(0)));
  }
  if (t.dtype() != DType::f32) {
    throw std::invalid_argument(std::string(kOp) + ": " + name + " has dtype " +
                                dtype_name(t.dtype()) + ", expected f32 on CUDA (BatchNorm keeps " +
                                "f32 parameters and statistics for f32 and f16 inputs; input is " +
                                dtype_name(input.dtype()) + ")");
  }
}

// A running statistic is updated in place by the launcher: it must be one dense [C] block.
void check_updatable(const Tensor& t, const char* name) {
  if (t.defined() && !t.is_contiguous()) {
    throw std::invalid_argument(std::string(kOp) + ": " + name +
                                " must be contiguous to be updated in place on CUDA, got " +
                                t.str());
  }
}

// The CPU path's checks (layers/batchnorm2d.cpp), with CUDA's dtype rules.
void check_arguments(const Tensor& input, const Tensor& weight, const Tensor& bias,
                     const Tensor& running_mean, const Tensor& running_var,
                     const Tensor& num_batches_tracked, bool training, double momentum,
                     double eps) {
  // num_batches_tracked is a host-readable counter; it may live on either device.
  cuda::require_same_cuda_device(kOp, {input, weight, bias, running_mean, running_var});
  if (input.dim() != 4) {
    throw std::invalid_argument(std::string(kOp) + ": input must be 4-D [N, C, H, W], got shape " +
                                shape_str(input.shape()));
  }
  cuda::require_cuda_float(kOp, input);
  check_channel_tensor(weight, "weight", input);
  check_channel_tensor(bias, "bias", input);
  check_channel_tensor(running_mean, "running_mean", input);
  check_channel_tensor(running_var, "running_var", input);
  check_updatable(running_mean, "running_mean");
  check_updatable(running_var, "running_var");
  if (running_mean.defined() != running_var.defined()) {
    throw std::invalid_argument(std::string(kOp) +
                                ": running_mean and running_var must be both defined or both "
                                "undefined");
  }
  if (!training && !running_mean.defined()) {
    throw std::invalid_argument(std::string(kOp) +
                                ": running_mean and running_var must be defined in evaluation "
                                "mode (training = false)");
  }
  if (num_batches_tracked.defined() &&
      (num_batches_tracked.dtype() != DType::i64 || num_batches_tracked.numel() != 1)) {
    throw std::invalid_argument(std::string(kOp) +
                                ": num_batches_tracked must be a one-element i64 tensor, got " +
                                num_batches_tracked.str());
  }
  const int64_t per_channel = input.size(0) * input.size(2) * input.size(3);
  if (training && per_channel == 1) {
    throw std::invalid_argument(std::string(kOp) +
                                ": expected more than 1 value per channel when training, got "
                                "input size " +
                                shape_str(input.shape()) +
                                " (use a batch larger than 1, or evaluation mode)");
  }
  if (!(eps > 0.0)) {
    throw std::invalid_argument(std::string(kOp) + ": eps must be positive, got " +
                                std::to_string(eps));
  }
  if (!(momentum >= 0.0 && momentum <= 1.0)) {
    throw std::invalid_argument(std::string(kOp) + ": momentum must be in [0, 1], got " +
                                std::to_string(momentum));
  }
}

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

// A new tensor on x's device with exactly x's (dense) strides.
Tensor empty_with_layout(const Tensor& x) {
  Tensor out = empty_like(x);
  out.impl()->strides = x.strides();
  return out;
}

// An f32 [C] tensor on `device`.
Tensor channel_buffer(int64_t channels, const Device& device) {
  return empty({channels}, TensorOptions(DType::f32).with_device(device));
}

// Device memory for the launchers' reductions over `layout` (f32 elements,
// so that it is aligned for floats).
Tensor reduction_workspace(const cuda::ActivationLayout& layout, const Device& device) {
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
                          Tensor save_invstd, cuda::ActivationLayout layout, bool batch_statistics,
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
      if (need_input) grads[0] = empty_with_layout(x_);
      if (need_weight) grads[1] = zeros({channels}, TensorOptions(DType::f32).with_device(device));
      if (need_bias) grads[2] = zeros({channels}, TensorOptions(DType::f32).with_device(device));
      return grads;
    }
    Tensor g = grad_output.detach();
    if (g.dtype() != x_.dtype()) g = g.to(x_.dtype());
    g = align_layout(g, x_);
    if (need_input) grads[0] = empty_with_layout(x_);
    if (need_weight) grads[1] = channel_buffer(channels, device);
    if (need_bias) grads[2] = channel_buffer(channels, device);
    Tensor workspace = reduction_workspace(layout_, device);
    const cuda::Stream stream = cuda::stream_of(x_);
    dispatch_cuda_float(x_.dtype(), [&](auto tag) {
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
  cuda::ActivationLayout layout_;
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
  check_arguments(input, weight, bias, running_mean, running_var, num_batches_tracked, training,
                  momentum, eps);
  const Tensor x = cuda::dense_activation(input.detach());
  const cuda::ActivationLayout layout = cuda::activation_layout(x, kOp);
  const Device device = x.device();
  // weight and bias are read as dense [C] blocks (a copy only for a strided view).
  const Tensor w = weight.defined() ? weight.detach().contiguous() : Tensor();
  const Tensor b = bias.defined() ? bias.detach().contiguous() : Tensor();
  Tensor running_mean_data = running_mean.defined() ? running_mean.detach() : Tensor();
  Tensor running_var_data = running_var.defined() ? running_var.detach() : Tensor();

  Tensor y = empty_with_layout(x);
  Tensor save_mean = channel_buffer(layout.channels, device);
  Tensor save_invstd = channel_buffer(layout.channels, device);
  const cuda::Stream stream = cuda::stream_of(x);
  if (training) {
    // An empty batch does nothing (the running statistics stay), as on the CPU.
    if (layout.numel() > 0) {
      Tensor workspace = reduction_workspace(layout, device);
      dispatch_cuda_float(x.dtype(), [&](auto tag) {
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
    dispatch_cuda_float(x.dtype(), [&](auto tag) {
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
