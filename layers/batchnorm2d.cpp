// BatchNorm2d: argument checks, the per-channel statistics and running-stat
// update, the autograd node, and the Module. The math is in batchnorm2d.h; the
// loops are in batchnorm2d_cpu.cpp.
//
// Forward folds each channel into one multiply-add, as PyTorch's CPU kernel:
//   scale = weight * invstd, shift = bias - mean * scale, y = x * scale + shift.
// Backward, with the sums S_g = sum(g) and S_gc = sum(g * (x - mean)):
//   dweight = S_gc * invstd, dbias = S_g,
//   dx = gain * (g - mean_g - (x - mean) * projection), gain = weight * invstd, and
//     training:   mean_g = S_g / M, projection = S_gc * invstd^2 / M
//                 (= the batch-statistics formula in the header, expanded)
//     evaluation: mean_g = 0,       projection = 0
// A CUDA input goes to layers/batchnorm2d_cuda_op.cpp (f32 or f16 input, f32
// parameters and statistics; same semantics).
// The CPU path can apply an activation after the normalization in the same
// passes (cpu::batch_norm_with_activation, used by batch_norm_activation in
// layers/batchnorm_activation.h): the node then also keeps scale and shift,
// and its kernels recompute y = x * scale + shift to apply act'(y).
#include "layers/batchnorm2d.h"

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "autograd/node.h"
#include "layers/batchnorm2d_cpu.h"
#include "layers/batchnorm2d_cuda_op.h"
#include "layers/graph_input.h"
#include "tensor/cuda_tensor.h"
#include "tensor/ops.h"

namespace b3 {

namespace {

constexpr const char* kOp = "batch_norm2d";

// A per-channel argument ([C], the input's dtype) or undefined.
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
  if (input.device().is_cuda()) {
    if (t.dtype() != DType::f32) {
      throw std::invalid_argument(std::string(kOp) + ": " + name + " has dtype " +
                                  dtype_name(t.dtype()) +
                                  ", expected f32 on CUDA (BatchNorm keeps f32 parameters and "
                                  "statistics for f32 and f16 inputs; input is " +
                                  dtype_name(input.dtype()) + ")");
    }
  } else if (t.dtype() != input.dtype()) {
    throw std::invalid_argument(std::string(kOp) + ": " + name + " has dtype " +
                                dtype_name(t.dtype()) + ", input has " + dtype_name(input.dtype()) +
                                " (convert the module with to(dtype))");
  }
}

// The CUDA launchers update a running statistic in place: one dense [C] block.
void check_updatable(const Tensor& t, const char* name) {
  if (t.defined() && !t.is_contiguous()) {
    throw std::invalid_argument(std::string(kOp) + ": " + name +
                                " must be contiguous to be updated in place on CUDA, got " +
                                t.str());
  }
}

}  // namespace

void check_batch_norm_arguments(const Tensor& input, const Tensor& weight, const Tensor& bias,
                                const Tensor& running_mean, const Tensor& running_var,
                                const Tensor& num_batches_tracked, bool training, double momentum,
                                double eps) {
  if (!input.defined()) throw std::invalid_argument(std::string(kOp) + ": input is undefined");
  const bool on_cuda = input.device().is_cuda();
  if (on_cuda) {
    // num_batches_tracked is a host-readable counter; it may live on either device.
    cuda::require_same_cuda_device(kOp, {input, weight, bias, running_mean, running_var});
  } else {
    require_cpu(kOp, {input, weight, bias, running_mean, running_var, num_batches_tracked});
  }
  if (input.dim() != 4) {
    throw std::invalid_argument(std::string(kOp) + ": input must be 4-D [N, C, H, W], got shape " +
                                shape_str(input.shape()));
  }
  if (on_cuda) {
    cuda::require_cuda_float(kOp, input);  // f32 or f16
  } else {
    dispatch_float(input.dtype(), kOp, [](auto) {});  // f32 or f64, else a clear error
  }
  check_channel_tensor(weight, "weight", input);
  check_channel_tensor(bias, "bias", input);
  check_channel_tensor(running_mean, "running_mean", input);
  check_channel_tensor(running_var, "running_var", input);
  if (on_cuda) {
    check_updatable(running_mean, "running_mean");
    check_updatable(running_var, "running_var");
  }
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

namespace {

// The input, dense NCHW or NHWC (copied only when it is neither), and its
// (outer, C, inner) view.
Tensor dense_input(const Tensor& input) {
  const Tensor x = input.detach();
  if (x.is_contiguous(MemoryFormat::contiguous) || x.is_contiguous(MemoryFormat::channels_last)) {
    return x;
  }
  return x.contiguous(x.suggest_memory_format());
}

cpu::BatchNormLayout layout_of(const Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  if (x.is_contiguous(MemoryFormat::contiguous)) return {n, c, hw};
  return {n * hw, c, 1};  // channels_last
}

// Values of a per-channel tensor, or `fallback` for each channel when undefined.
std::vector<double> channel_values(const Tensor& t, int64_t channels, double fallback) {
  if (!t.defined()) return std::vector<double>(static_cast<size_t>(channels), fallback);
  return t.to_doubles();
}

// buffer[c] = (1 - momentum) * buffer[c] + momentum * value[c], in place, any stride.
void blend_into(Tensor& buffer, const std::vector<double>& value, double momentum) {
  dispatch_float(buffer.dtype(), kOp, [&](auto tag) {
    using T = decltype(tag);
    T* data = buffer.data<T>();
    const int64_t stride = buffer.stride(0);
    for (int64_t c = 0; c < buffer.size(0); ++c) {
      T& slot = data[c * stride];
      slot = static_cast<T>((1.0 - momentum) * static_cast<double>(slot) +
                            momentum * value[static_cast<size_t>(c)]);
    }
  });
}

void increment_counter(Tensor& counter) {
  // One element; its storage offset is already in data_ptr().
  counter.data<int64_t>()[0] += 1;
}

const char* node_name(cpu::BatchNormActivation activation) {
  switch (activation) {
    case cpu::BatchNormActivation::relu: return "BatchNorm2dReluBackward";
    case cpu::BatchNormActivation::hardswish: return "BatchNorm2dHardswishBackward";
    case cpu::BatchNormActivation::none: break;
  }
  return "BatchNorm2dBackward";
}

class BatchNorm2dBackward final : public Node {
 public:
  BatchNorm2dBackward(Tensor x, Tensor weight, std::vector<double> mean, std::vector<double> invstd,
                      bool batch_statistics, cpu::BatchNormActivation activation,
                      std::vector<double> scale, std::vector<double> shift)
      : Node(node_name(activation)),
        x_(std::move(x)),
        weight_(std::move(weight)),
        mean_(std::move(mean)),
        invstd_(std::move(invstd)),
        batch_statistics_(batch_statistics),
        activation_(activation),
        scale_(std::move(scale)),
        shift_(std::move(shift)) {}

  // inputs: {input, weight, bias}; weight and bias may be undefined.
  std::vector<Tensor> backward(const Tensor& grad_output) override {
    const bool need_input = inputs[0].requires_grad();
    const bool need_weight = inputs[1].defined() && inputs[1].requires_grad();
    const bool need_bias = inputs[2].defined() && inputs[2].requires_grad();
    const cpu::BatchNormLayout layout = layout_of(x_);
    const int64_t channels = layout.channels;
    const size_t cs = static_cast<size_t>(channels);
    const Tensor g = align_layout(grad_output.detach(), x_);
    const cpu::NormalizedActivation activation{activation_, scale_.data(), shift_.data()};

    std::vector<double> sum_g(cs, 0.0), sum_g_centered(cs, 0.0);
    const bool need_sums = need_weight || need_bias || (need_input && batch_statistics_);
    std::vector<Tensor> grads(3);
    dispatch_float(x_.dtype(), kOp, [&](auto tag) {
      using T = decltype(tag);
      const T* gp = static_cast<const T*>(g.data_ptr());
      const T* xp = static_cast<const T*>(x_.data_ptr());
      if (need_sums && layout.per_channel() > 0) {
        cpu::batch_norm_gradient_sums(gp, xp, layout, mean_.data(), sum_g.data(),
                                      sum_g_centered.data(), activation);
      }
      if (need_input) {
        const std::vector<double> weight = channel_values(weight_, channels, 1.0);
        const double count = static_cast<double>(layout.per_channel());
        std::vector<double> mean_g(cs, 0.0), projection(cs, 0.0), gain(cs);
        for (size_t c = 0; c < cs; ++c) {
          gain[c] = weight[c] * invstd_[c];
          if (batch_statistics_ && count > 0) {
            mean_g[c] = sum_g[c] / count;
            projection[c] = sum_g_centered[c] * invstd_[c] * invstd_[c] / count;
          }
        }
        Tensor grad_input = empty_strided_like(x_);
        cpu::batch_norm_input_gradient(gp, xp, static_cast<T*>(grad_input.data_ptr()), layout,
                                       mean_.data(), mean_g.data(), projection.data(), gain.data(),
                                       activation);
        grads[0] = grad_input;
      }
    });
    if (need_weight) {
      std::vector<double> grad_weight(cs);
      for (size_t c = 0; c < cs; ++c) grad_weight[c] = sum_g_centered[c] * invstd_[c];
      grads[1] = from_doubles(grad_weight, {channels}, TensorOptions(inputs[1].dtype()));
    }
    if (need_bias) grads[2] = from_doubles(sum_g, {channels}, TensorOptions(inputs[2].dtype()));
    return grads;
  }

 private:
  Tensor x_;                             // the input, detached, dense NCHW or NHWC
  Tensor weight_;                        // detached, or undefined (weight 1)
  std::vector<double> mean_;             // the mean used to normalize (batch or running)
  std::vector<double> invstd_;           // 1 / sqrt(var + eps), the var used to normalize
  bool batch_statistics_;                // training: gradients flow through mean and var
  cpu::BatchNormActivation activation_;  // applied after the normalization
  std::vector<double> scale_;            // weight * invstd, as the forward used it
  std::vector<double> shift_;            // bias - mean * scale, as the forward used it
};

}  // namespace

Tensor batch_norm2d(const Tensor& input, const Tensor& weight, const Tensor& bias,
                    const Tensor& running_mean, const Tensor& running_var,
                    const Tensor& num_batches_tracked, bool training, double momentum, double eps) {
  if (input.defined() && input.device().is_cuda()) {
    return cuda_op::batch_norm2d(input, weight, bias, running_mean, running_var,
                                 num_batches_tracked, training, momentum, eps);
  }
  return cpu::batch_norm_with_activation(input, weight, bias, running_mean, running_var,
                                         num_batches_tracked, training, momentum, eps,
                                         cpu::BatchNormActivation::none);
}

Tensor cpu::batch_norm_with_activation(const Tensor& input, const Tensor& weight,
                                       const Tensor& bias, const Tensor& running_mean,
                                       const Tensor& running_var, const Tensor& num_batches_tracked,
                                       bool training, double momentum, double eps,
                                       BatchNormActivation activation) {
  check_batch_norm_arguments(input, weight, bias, running_mean, running_var, num_batches_tracked,
                             training, momentum, eps);
  const Tensor x = dense_input(input);
  const cpu::BatchNormLayout layout = layout_of(x);
  const int64_t channels = layout.channels;
  const size_t cs = static_cast<size_t>(channels);
  const int64_t count = layout.per_channel();

  // The statistics that normalize: the batch's (training) or the running ones.
  std::vector<double> mean(cs, 0.0), var(cs, 0.0);
  if (training) {
    if (count > 0) {
      dispatch_float(x.dtype(), kOp, [&](auto tag) {
        using T = decltype(tag);
        cpu::batch_norm_statistics(static_cast<const T*>(x.data_ptr()), layout, mean.data(),
                                   var.data());
      });
      if (running_mean.defined()) {
        // running_var tracks the unbiased variance: var * M / (M - 1).
        std::vector<double> unbiased(cs);
        const double correction = static_cast<double>(count) / static_cast<double>(count - 1);
        for (size_t c = 0; c < cs; ++c) unbiased[c] = var[c] * correction;
        Tensor rm = running_mean, rv = running_var;
        blend_into(rm, mean, momentum);
        blend_into(rv, unbiased, momentum);
      }
    }
    if (num_batches_tracked.defined()) {
      Tensor counter = num_batches_tracked;
      increment_counter(counter);
    }
  } else {
    mean = running_mean.to_doubles();
    var = running_var.to_doubles();
  }

  std::vector<double> invstd(cs), scale(cs), shift(cs);
  const std::vector<double> w = channel_values(weight, channels, 1.0);
  const std::vector<double> b = channel_values(bias, channels, 0.0);
  for (size_t c = 0; c < cs; ++c) {
    invstd[c] = 1.0 / std::sqrt(var[c] + eps);
    scale[c] = w[c] * invstd[c];
    shift[c] = b[c] - mean[c] * scale[c];
  }

  Tensor y = empty_strided_like(x);
  if (count > 0) {
    dispatch_float(x.dtype(), kOp, [&](auto tag) {
      using T = decltype(tag);
      cpu::batch_norm_scale_shift(static_cast<const T*>(x.data_ptr()),
                                  static_cast<T*>(y.data_ptr()), layout, scale.data(), shift.data(),
                                  activation);
    });
  }
  if (should_record({input, weight, bias})) {
    auto node = std::make_shared<BatchNorm2dBackward>(
        x, weight.defined() ? weight.detach() : Tensor(), std::move(mean), std::move(invstd),
        training, activation, std::move(scale), std::move(shift));
    record(y, std::move(node), {graph_input(input), weight, bias});
  }
  return y;
}

BatchNorm2d::BatchNorm2d(int64_t num_features, double eps, double momentum, bool affine,
                         bool track_running_stats)
    : BatchNorm2d(BatchNorm2dOptions{num_features, eps, momentum, affine, track_running_stats}) {}

BatchNorm2d::BatchNorm2d(const BatchNorm2dOptions& options) : options_(options) {
  if (options.num_features <= 0) {
    throw std::invalid_argument("BatchNorm2d: num_features must be positive, got " +
                                std::to_string(options.num_features));
  }
  const Shape channels{options.num_features};
  if (options.affine) {
    weight = register_parameter("weight", ones(channels));
    bias = register_parameter("bias", zeros(channels));
  }
  if (options.track_running_stats) {
    running_mean = register_buffer("running_mean", zeros(channels));
    running_var = register_buffer("running_var", ones(channels));
    num_batches_tracked = register_buffer("num_batches_tracked", zeros({}, DType::i64));
  }
}

Tensor BatchNorm2d::forward(const Tensor& input) {
  // As nn.BatchNorm2d: batch statistics in training mode, and always when no
  // running statistics are kept; running statistics in evaluation mode.
  const bool use_batch_statistics = is_training() || !running_mean.defined();
  return batch_norm2d(input, weight, bias, running_mean, running_var,
                      is_training() ? num_batches_tracked : Tensor(), use_batch_statistics,
                      options_.momentum, options_.eps);
}

std::string BatchNorm2d::describe() const {
  std::ostringstream out;
  out << "BatchNorm2d(" << options_.num_features << ", eps=" << options_.eps
      << ", momentum=" << options_.momentum << ", affine=" << (options_.affine ? "true" : "false")
      << ", track_running_stats=" << (options_.track_running_stats ? "true" : "false") << ")";
  return out.str();
}

void BatchNorm2d::set_momentum(double momentum) {
  if (!(momentum >= 0.0 && momentum <= 1.0)) {
    throw std::invalid_argument("BatchNorm2d: momentum must be in [0, 1], got " +
                                std::to_string(momentum));
  }
  options_.momentum = momentum;
}

}  // namespace b3
