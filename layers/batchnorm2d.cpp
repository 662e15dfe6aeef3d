// BatchNorm2d: argument checks, one op for both devices with one autograd
// node, and the Module. The math is in batchnorm2d.h. batch_norm2d is
// batch_norm_activation with Activation::none; the device branch is at the
// kernel call (run_forward, run_backward): the CPU kernels
// (batchnorm2d_cpu.h) keep the statistics that normalized in f64, the CUDA
// launchers (batchnorm2d_cuda.h) in f32 with a reduction workspace from the
// caching allocator (the same size every step, so the same block comes
// back). Nothing here reads device memory on the host.
#include "layers/batchnorm2d.h"

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "autograd/node.h"
#include "layers/batchnorm2d_cpu.h"
#include "layers/batchnorm2d_cuda.h"
#include "layers/graph_input.h"
#include "tensor/activation_layout.h"
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

// The device's dtype rules: CPU: everything in the input's f32 or f64; CUDA: an
// f32 or f16 input with f32 parameters and contiguous running statistics.
void check_batch_norm_arguments(const Tensor& input, const Tensor& weight, const Tensor& bias,
                                const Tensor& running_mean, const Tensor& running_var,
                                const Tensor& num_batches_tracked, bool training, double momentum,
                                double eps) {
  if (!input.defined()) throw std::invalid_argument(std::string(kOp) + ": input is undefined");
  const bool on_cuda = input.device().is_cuda();
  if (on_cuda) {
    cuda::require_same_cuda_device(kOp, {input, weight, bias, running_mean, running_var});
    // The counter may live on the input's device (Module::to moves it there)
    // or stay on the host: increment_counter() adds one where it is.
    if (num_batches_tracked.defined() && !num_batches_tracked.device().is_cpu()) {
      cuda::require_same_cuda_device(kOp, {input, num_batches_tracked});
    }
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

void check_fused_activation(Activation activation) {
  if (activation == Activation::none || activation == Activation::relu ||
      activation == Activation::hardswish) {
    return;
  }
  throw std::invalid_argument(std::string("batch_norm_activation: activation ") +
                              activation_name(activation) +
                              " is not fused with BatchNorm (none, relu or hardswish)");
}

const char* node_name(Activation activation) {
  switch (activation) {
    case Activation::relu: return "BatchNorm2dReluBackward";
    case Activation::hardswish: return "BatchNorm2dHardswishBackward";
    default: return "BatchNorm2dBackward";
  }
}

// num_batches_tracked += 1 where the counter lives: a plain store on the
// host, a one-thread kernel on the compute stream of a CUDA device (no round
// trip through the host, so the step never waits for the device here).
void increment_counter(const Tensor& num_batches_tracked) {
  Tensor counter = num_batches_tracked;
  if (counter.device().is_cuda()) {
    cuda::batch_norm_count_batch(static_cast<int64_t*>(counter.data_ptr()),
                                 cuda::stream_of(counter));
    return;
  }
  counter.data<int64_t>()[0] += 1;  // one element; its offset is already in data_ptr()
}

// The dtype of the statistics that normalized (save_mean, save_invstd), and
// of the parameters and their gradients: on the CPU f64 and the input's
// dtype, on CUDA f32 and f32.
DType statistics_dtype(const Tensor& x) { return x.device().is_cuda() ? DType::f32 : DType::f64; }
DType parameter_dtype(const Tensor& x) { return x.device().is_cuda() ? DType::f32 : x.dtype(); }

// Device memory for the CUDA launchers' reductions over `layout` (f32
// elements, so that it is aligned for floats).
Tensor reduction_workspace(const ActivationLayout& layout, const Device& device) {
  const size_t bytes = cuda::batch_norm_workspace_bytes(layout);
  const auto floats = static_cast<int64_t>((bytes + sizeof(float) - 1) / sizeof(float));
  return empty({floats}, TensorOptions(DType::f32).with_device(device));
}

// What one call normalizes with and writes, dense: x and y in `layout`, the
// per-channel tensors [C] (weight, bias, running statistics may be undefined).
struct BatchNormCall {
  Tensor x, weight, bias, running_mean, running_var;
  ActivationLayout layout;
  Activation activation = Activation::none;
};

// y = act(batch_norm(x)), save_mean and save_invstd, and in training the
// running statistics updated, on x's device.
void run_forward(BatchNormCall& call, bool training, double momentum, double eps, Tensor& y,
                 Tensor& save_mean, Tensor& save_invstd) {
  const ActivationLayout& l = call.layout;
  if (call.x.device().is_cuda()) {
    const cuda::Stream stream = cuda::stream_of(call.x);
    Tensor workspace = training ? reduction_workspace(l, call.x.device()) : Tensor();
    cuda::dispatch_cuda_float(call.x.dtype(), kOp, [&](auto tag) {
      using T = decltype(tag);
      const T* x = static_cast<const T*>(call.x.data_ptr());
      T* out = static_cast<T*>(y.data_ptr());
      const float* w = pointer_or_null<float>(call.weight);
      const float* b = pointer_or_null<float>(call.bias);
      float* mean = static_cast<float*>(save_mean.data_ptr());
      float* invstd = static_cast<float*>(save_invstd.data_ptr());
      if (training) {
        cuda::batch_norm_forward_training(
            x, w, b, mutable_pointer_or_null<float>(call.running_mean),
            mutable_pointer_or_null<float>(call.running_var), out, mean, invstd, l, momentum, eps,
            call.activation, workspace.defined() ? workspace.data_ptr() : nullptr,
            workspace.nbytes(), stream);
      } else {
        cuda::batch_norm_forward_inference(x, w, b, pointer_or_null<float>(call.running_mean),
                                           pointer_or_null<float>(call.running_var), out, mean,
                                           invstd, l, eps, call.activation, stream);
      }
    });
    return;
  }
  dispatch_float(call.x.dtype(), kOp, [&](auto tag) {
    using T = decltype(tag);
    const T* x = static_cast<const T*>(call.x.data_ptr());
    T* out = static_cast<T*>(y.data_ptr());
    double* mean = save_mean.data<double>();
    double* invstd = save_invstd.data<double>();
    if (training) {
      cpu::batch_norm_forward_training(x, pointer_or_null<T>(call.weight),
                                       pointer_or_null<T>(call.bias),
                                       mutable_pointer_or_null<T>(call.running_mean),
                                       mutable_pointer_or_null<T>(call.running_var), out, mean,
                                       invstd, l, momentum, eps, call.activation);
    } else {
      cpu::batch_norm_forward_inference(
          x, pointer_or_null<T>(call.weight), pointer_or_null<T>(call.bias),
          pointer_or_null<T>(call.running_mean), pointer_or_null<T>(call.running_var), out, mean,
          invstd, l, eps, call.activation);
    }
  });
}

// Whichever of grad_x, grad_weight, grad_bias is defined, from g (dense like
// x) and the saved statistics, on x's device.
void run_backward(const BatchNormCall& call, const Tensor& save_mean, const Tensor& save_invstd,
                  bool training, const Tensor& g, Tensor& grad_x, Tensor& grad_weight,
                  Tensor& grad_bias) {
  const ActivationLayout& l = call.layout;
  if (call.x.device().is_cuda()) {
    Tensor workspace = reduction_workspace(l, call.x.device());
    cuda::dispatch_cuda_float(call.x.dtype(), kOp, [&](auto tag) {
      using T = decltype(tag);
      cuda::batch_norm_backward(
          static_cast<const T*>(call.x.data_ptr()), static_cast<const T*>(g.data_ptr()),
          pointer_or_null<float>(call.weight), pointer_or_null<float>(call.bias),
          static_cast<const float*>(save_mean.data_ptr()),
          static_cast<const float*>(save_invstd.data_ptr()), mutable_pointer_or_null<T>(grad_x),
          mutable_pointer_or_null<float>(grad_weight), mutable_pointer_or_null<float>(grad_bias), l,
          training, call.activation, workspace.data_ptr(), workspace.nbytes(),
          cuda::stream_of(call.x));
    });
    return;
  }
  dispatch_float(call.x.dtype(), kOp, [&](auto tag) {
    using T = decltype(tag);
    cpu::batch_norm_backward(static_cast<const T*>(call.x.data_ptr()),
                             static_cast<const T*>(g.data_ptr()), pointer_or_null<T>(call.weight),
                             pointer_or_null<T>(call.bias), save_mean.data<double>(),
                             save_invstd.data<double>(), mutable_pointer_or_null<T>(grad_x),
                             mutable_pointer_or_null<T>(grad_weight),
                             mutable_pointer_or_null<T>(grad_bias), l, training, call.activation);
  });
}

// Keeps the input, the weight, the bias (only with an activation: the
// backward recomputes y from it) and the statistics that normalized; the
// running statistics are not graph state and are dropped.
class BatchNorm2dBackward final : public Node {
 public:
  BatchNorm2dBackward(BatchNormCall call, Tensor save_mean, Tensor save_invstd,
                      bool batch_statistics, const Tensor& output,
                      std::shared_ptr<Node> absorbed_producer)
      : Node(node_name(call.activation)),
        call_(std::move(call)),
        save_mean_(std::move(save_mean)),
        save_invstd_(std::move(save_invstd)),
        batch_statistics_(batch_statistics),
        output_data_(output.data_ptr()),
        producer_(std::move(absorbed_producer)) {
    call_.running_mean = Tensor();
    call_.running_var = Tensor();
  }

  // CPU, NHWC: act(x * scale + shift) image by image, from the saved input
  // and the constants folded now (a later in-place update of weight or bias
  // does not change the replay).
  OutputReplay output_replay(const Tensor& output) const override {
    const Tensor& x = call_.x;
    const bool is_output = output.defined() && output.data_ptr() == output_data_ &&
                           output.shape() == x.shape() && output.strides() == x.strides() &&
                           output.dtype() == x.dtype();
    if (!is_output || !x.device().is_cpu() || call_.layout.inner() != 1) return {};
    OutputReplay replay;
    dispatch_float(x.dtype(), kOp, [&](auto tag) {
      using T = decltype(tag);
      auto map = std::make_shared<const cpu::NhwcNormalizedActivation<T>>(
          pointer_or_null<T>(call_.weight), pointer_or_null<T>(call_.bias),
          save_mean_.data<double>(), save_invstd_.data<double>(), call_.layout.channels,
          call_.activation);
      const int64_t image = call_.layout.outer_per_image();
      const int64_t image_elements = image * call_.layout.channels;
      replay = [map, x, image, image_elements](int64_t first, int64_t count, void* out) {
        map->apply(x.data<T>() + first * image_elements, static_cast<T*>(out), count * image);
      };
    });
    return replay;
  }

  // inputs: {input, weight, bias} (with an absorbed producer: the
  // producer's inputs, then weight and bias); weight and bias may be
  // undefined.
  std::vector<Tensor> backward(const Tensor& grad_output) override {
    if (producer_) return backward_through_producer(grad_output);
    const bool need_input = inputs[0].requires_grad();
    const bool need_weight = inputs[1].defined() && inputs[1].requires_grad();
    const bool need_bias = inputs[2].defined() && inputs[2].requires_grad();
    std::vector<Tensor> grads(3);
    if (!need_input && !need_weight && !need_bias) return grads;
    const Tensor& x = call_.x;
    const TensorOptions parameters = TensorOptions(parameter_dtype(x)).with_device(x.device());
    const int64_t channels = call_.layout.channels;
    if (call_.layout.numel() == 0) {  // sums over no values: 0
      if (need_input) grads[0] = empty_strided_like(x);
      if (need_weight) grads[1] = zeros({channels}, parameters);
      if (need_bias) grads[2] = zeros({channels}, parameters);
      return grads;
    }
    Tensor g = grad_output.detach();
    if (g.dtype() != x.dtype()) g = g.to(x.dtype());
    g = align_layout(g, x);
    if (need_input) grads[0] = empty_strided_like(x);
    if (need_weight) grads[1] = empty({channels}, parameters);
    if (need_bias) grads[2] = empty({channels}, parameters);
    run_backward(call_, save_mean_, save_invstd_, batch_statistics_, g, grads[0], grads[1],
                 grads[2]);
    return grads;
  }

  // With an absorbed producer (see batch_norm_activation) the inputs are the
  // producer's, then weight and bias: the sums pass runs here, and the
  // producer's backward reads dL/dx slice by slice from it, so dL/dx is
  // never stored. The same gradients as the two nodes
  // (tests/test_conv_bn_backward.cpp).
  std::vector<Tensor> backward_through_producer(const Tensor& grad_output) {
    const size_t first_own = producer_->inputs.size();
    const Tensor& weight = inputs[first_own];
    const Tensor& bias = inputs[first_own + 1];
    const Tensor& x = call_.x;
    const TensorOptions parameters = TensorOptions(parameter_dtype(x)).with_device(x.device());
    Tensor grad_weight, grad_bias;
    if (weight.defined() && weight.requires_grad())
      grad_weight = empty({call_.layout.channels}, parameters);
    if (bias.defined() && bias.requires_grad())
      grad_bias = empty({call_.layout.channels}, parameters);
    Tensor g = grad_output.detach();
    if (g.dtype() != x.dtype()) g = g.to(x.dtype());
    g = align_layout(g, x);
    std::vector<Tensor> grads;
    dispatch_float(x.dtype(), kOp, [&](auto tag) {
      using T = decltype(tag);
      const cpu::NhwcBatchNormInputGradient<T> input_gradient(
          x.data<T>(), g.data<T>(), pointer_or_null<T>(call_.weight),
          pointer_or_null<T>(call_.bias), save_mean_.data<double>(), save_invstd_.data<double>(),
          call_.layout, batch_statistics_, call_.activation,
          mutable_pointer_or_null<T>(grad_weight), mutable_pointer_or_null<T>(grad_bias));
      grads =
          producer_->backward_from_rows([&input_gradient](int64_t first, int64_t count, void* out) {
            input_gradient.rows(first, count, static_cast<T*>(out));
          });
    });
    grads.push_back(grad_weight);
    grads.push_back(grad_bias);
    return grads;
  }

 private:
  BatchNormCall call_;       // x dense in its layout; weight and bias detached dense [C]
  Tensor save_mean_;         // [C]: the mean that normalized (batch or running)
  Tensor save_invstd_;       // [C]: 1 / sqrt(var + eps) of the var that normalized
  bool batch_statistics_;    // training: gradients flow through mean and var
  const void* output_data_;  // the output's storage: what output_replay recognizes (never read)
  std::shared_ptr<Node> producer_;  // the absorbed node that made x, or null
};

// A running statistic the kernels can update in place: itself when it is a
// dense [C] block, else a dense copy (CPU only: CUDA requires the block).
Tensor updatable(const Tensor& t) {
  if (!t.defined()) return t;
  const Tensor detached = t.detach();
  return detached.is_contiguous() ? detached : detached.contiguous();
}

// What the fused forward reads, from a dense input `x`: weight and bias as
// dense [C] blocks (a copy only for a strided view), the running statistics
// as tensors the kernels may update.
BatchNormCall batch_norm_call(const Tensor& x, const Tensor& weight, const Tensor& bias,
                              const Tensor& running_mean, const Tensor& running_var,
                              Activation activation) {
  BatchNormCall call;
  call.x = x;
  call.layout = activation_layout(call.x, kOp);
  call.activation = activation;
  call.weight = weight.defined() ? weight.detach().contiguous() : Tensor();
  call.bias = bias.defined() ? bias.detach().contiguous() : Tensor();
  call.running_mean = updatable(running_mean);
  call.running_var = updatable(running_var);
  return call;
}

}  // namespace

Tensor batch_norm2d(const Tensor& input, const Tensor& weight, const Tensor& bias,
                    const Tensor& running_mean, const Tensor& running_var,
                    const Tensor& num_batches_tracked, bool training, double momentum, double eps) {
  return batch_norm_activation(input, weight, bias, running_mean, running_var, num_batches_tracked,
                               training, momentum, eps, Activation::none);
}

Tensor batch_norm_activation(const Tensor& input, const Tensor& weight, const Tensor& bias,
                             const Tensor& running_mean, const Tensor& running_var,
                             const Tensor& num_batches_tracked, bool training, double momentum,
                             double eps, Activation activation) {
  check_batch_norm_arguments(input, weight, bias, running_mean, running_var, num_batches_tracked,
                             training, momentum, eps);
  check_fused_activation(activation);
  BatchNormCall call = batch_norm_call(dense_activation(input.detach()), weight, bias, running_mean,
                                       running_var, activation);
  Tensor y = empty_strided_like(call.x);
  const TensorOptions statistics =
      TensorOptions(statistics_dtype(call.x)).with_device(call.x.device());
  Tensor save_mean = empty({call.layout.channels}, statistics);
  Tensor save_invstd = empty({call.layout.channels}, statistics);
  run_forward(call, training, momentum, eps, y, save_mean, save_invstd);
  if (training) {
    // A strided running statistic got a dense copy: the update goes back.
    for (auto [given, used] :
         {std::pair{running_mean, call.running_mean}, std::pair{running_var, call.running_var}}) {
      if (given.defined() && given.data_ptr() != used.data_ptr()) {
        Tensor target = given;
        target.copy_(used);
      }
    }
    if (num_batches_tracked.defined()) increment_counter(num_batches_tracked);
  }
  if (should_record({input, weight, bias})) {
    // An input made by a node that takes its output gradient as rows (a 1x1
    // convolution on the CPU): this node absorbs it and runs its backward,
    // forming dL/d(input) slice by slice as that backward reads it instead
    // of writing it whole for the producer to read back (two passes over a
    // convolution's output fewer per step). The producer's inputs become
    // this node's; the producer stays the input's own grad_fn, so another
    // consumer of the input still reaches it (the engine adds the two).
    std::shared_ptr<Node> producer;
    if (call.x.device().is_cpu() && call.layout.inner() == 1 && call.layout.numel() > 0 &&
        input.grad_fn() && call.x.data_ptr() == input.data_ptr() &&
        input.grad_fn()->takes_gradient_rows(input)) {
      producer = input.grad_fn();
    }
    std::vector<Tensor> node_inputs =
        producer ? producer->inputs : std::vector<Tensor>{graph_input(input)};
    node_inputs.push_back(weight);
    node_inputs.push_back(bias);
    auto node = std::make_shared<BatchNorm2dBackward>(std::move(call), std::move(save_mean),
                                                      std::move(save_invstd), training, y,
                                                      std::move(producer));
    record(y, std::move(node), std::move(node_inputs));
  }
  return y;
}

Tensor batch_norm_activation_inference_(const Tensor& input, const Tensor& weight,
                                        const Tensor& bias, const Tensor& running_mean,
                                        const Tensor& running_var, double eps,
                                        Activation activation) {
  const std::string op = "batch_norm_activation_inference_";
  check_batch_norm_arguments(input, weight, bias, running_mean, running_var, Tensor(), false, 0.0,
                             eps);
  check_fused_activation(activation);
  if (!input.device().is_cpu()) {
    throw std::invalid_argument(op + ": the in-place form runs on the CPU only, got " +
                                input.str());
  }
  if (should_record({input, weight, bias})) {
    throw std::invalid_argument(op +
                                ": would overwrite a tensor autograd needs; use "
                                "batch_norm_activation, or run under NoGradGuard");
  }
  const Tensor x = input.detach();
  if (dense_activation(x).data_ptr() != x.data_ptr()) {
    throw std::invalid_argument(op + ": the input must be dense (NCHW or NHWC), got " +
                                input.str());
  }
  BatchNormCall call = batch_norm_call(x, weight, bias, running_mean, running_var, activation);
  const TensorOptions statistics =
      TensorOptions(statistics_dtype(call.x)).with_device(call.x.device());
  Tensor save_mean = empty({call.layout.channels}, statistics);
  Tensor save_invstd = empty({call.layout.channels}, statistics);
  Tensor y = call.x;  // each element is read once, then overwritten at the same place
  run_forward(call, false, 0.0, eps, y, save_mean, save_invstd);
  return y;
}

BatchNormInferenceConstants batch_norm_inference_constants(const Tensor& weight, const Tensor& bias,
                                                           const Tensor& running_mean,
                                                           const Tensor& running_var, double eps) {
  const std::string op = "batch_norm_inference_constants";
  if (!running_mean.defined() || !running_var.defined()) {
    throw std::invalid_argument(op + ": running_mean and running_var are required");
  }
  require_cpu(op.c_str(), {weight, bias, running_mean, running_var});
  const Tensor mean = running_mean.detach().contiguous();
  const Tensor var = running_var.detach().contiguous();
  const int64_t channels = mean.numel();
  for (const Tensor& t : {weight, bias, running_mean, running_var}) {
    if (t.defined() && (t.dim() != 1 || t.size(0) != channels || t.dtype() != mean.dtype())) {
      throw std::invalid_argument(op + ": weight, bias, running_mean and running_var must all be " +
                                  "[C] of one dtype, got " + t.str() + " beside running_mean " +
                                  running_mean.str());
    }
  }
  if (!(eps > 0.0)) {
    throw std::invalid_argument(op + ": eps must be positive, got " + std::to_string(eps));
  }
  BatchNormInferenceConstants folded{empty({channels}, mean.dtype()),
                                     empty({channels}, mean.dtype())};
  dispatch_float(mean.dtype(), op.c_str(), [&](auto tag) {
    using T = decltype(tag);
    const Tensor w = weight.defined() ? weight.detach().contiguous() : Tensor();
    const Tensor b = bias.defined() ? bias.detach().contiguous() : Tensor();
    cpu::batch_norm_inference_scale_shift(pointer_or_null<T>(w), pointer_or_null<T>(b),
                                          mean.data<T>(), var.data<T>(), eps, channels,
                                          folded.scale.data<T>(), folded.shift.data<T>());
  });
  return folded;
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
