// 2-D batch normalization with PyTorch's semantics, as
// torch.nn.functional.batch_norm on 4-D input and torch.nn.BatchNorm2d.
//
// Per channel c, over the M = N*H*W values of that channel:
//   y = (x - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]
// Training: mean and var are the batch's (var BIASED: divide by M); the
//   running statistics, when given, move towards the batch's, with the
//   UNBIASED variance (divide by M - 1), and num_batches_tracked counts up:
//     running_mean = (1 - momentum) * running_mean + momentum * mean
//     running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)
//   M == 1 is an error ("expected more than 1 value per channel when
//   training"), as in PyTorch.
// Evaluation: mean and var are running_mean and running_var (required).
//
// Gradients (xhat = (x - mean) * invstd, invstd = 1 / sqrt(var + eps), sums over
// the channel's M values):
//   training:   dx = weight * invstd / M * (M * g - sum(g) - xhat * sum(g * xhat))
//   evaluation: dx = weight * invstd * g   (the running statistics are constants)
//   dweight = sum(g * xhat), dbias = sum(g)
// The running statistics and num_batches_tracked are buffers: they are updated
// in place, never recorded by autograd (also under NoGradGuard, as in PyTorch).
//
// Input [N, C, H, W], NCHW or NHWC (channels_last); the output keeps the
// input's memory format. CPU: f32 or f64 with parameters and statistics of
// the same dtype; the kernels (batchnorm2d_cpu.h) accumulate the statistics
// and gradient sums in double. CUDA (batchnorm2d_cuda.h): an f32 or f16 input
// with f32 parameters and statistics, as torch.cuda.amp runs BatchNorm.
//
// batch_norm_activation is BatchNorm followed by an activation (none, ReLU or
// Hardswish) as ONE op, with exactly the semantics of the two ops in sequence
// (layers/activations.h): the same output, gradients, running statistics and
// num_batches_tracked. Why: the BatchNorm and activation passes run at the
// memory's bandwidth (docs/cpu_profile.md), so fewer passes is the only way
// to make them faster. Fused, the forward normalizes and activates in one
// pass (one read of x, one write of act(y)) and never stores the BatchNorm
// output y; the backward takes g = dL/d act(y), recomputes y from the saved x
// and applies act'(y) inside BatchNorm's two backward passes: no activation
// pass, no stored y, 3 memory passes fewer per element and step. Plain
// batch_norm2d is the same op with Activation::none, on both devices.
#pragma once

#include "layers/activations.h"
#include "layers/module.h"

namespace b3 {

// input               [N, C, H, W]
// weight, bias        [C] each, or undefined (then 1 and 0: affine = false)
// running_mean/_var   [C] each, both defined or both undefined; updated in
//                     place in training mode; required in evaluation mode
// num_batches_tracked one-element i64 tensor or undefined; incremented in
//                     place in training mode
// training            normalize with the batch statistics (and update the
//                     running ones) instead of the running statistics
// momentum, eps       PyTorch's defaults 0.1 and 1e-5 (MobileNetV3: 0.01, 1e-3)
// Parameters and running statistics must have the input's dtype.
// An empty batch (N == 0) gives an empty output and leaves the buffers alone.
// On CUDA the input is f32 or f16 and the parameters and statistics are f32.
Tensor batch_norm2d(const Tensor& input, const Tensor& weight, const Tensor& bias,
                    const Tensor& running_mean, const Tensor& running_var,
                    const Tensor& num_batches_tracked, bool training, double momentum = 0.1,
                    double eps = 1e-5);

// activation(batch_norm2d(input, ...)), activation none, relu or hardswish
// (hardsigmoid is refused: nothing fuses it). The arguments and their errors
// are batch_norm2d's; the autograd node is named BatchNorm2dBackward,
// BatchNorm2dReluBackward or BatchNorm2dHardswishBackward.
Tensor batch_norm_activation(const Tensor& input, const Tensor& weight, const Tensor& bias,
                             const Tensor& running_mean, const Tensor& running_var,
                             const Tensor& num_batches_tracked, bool training, double momentum,
                             double eps, Activation activation);

// batch_norm_activation in evaluation mode (the running statistics), written
// over `input` itself and returned (sharing its memory): for a forward that
// records no gradient, such as inference, where the input is a temporary
// nobody reads again (a convolution's output; ConvNormActivation itself
// goes one step further and normalizes in the convolution's store, see
// conv2d's Conv2dEpilogue).
// The same values as batch_norm_activation(..., training = false, ...); half
// the memory, since no second tensor of the input's size exists. Refused
// while gradients would be recorded for any argument, and for an input that
// is not dense (a view would write through to what it views). CPU only (the
// CUDA kernels have not been run in place on a GPU).
Tensor batch_norm_activation_inference_(const Tensor& input, const Tensor& weight,
                                        const Tensor& bias, const Tensor& running_mean,
                                        const Tensor& running_var, double eps,
                                        Activation activation);

// Evaluation mode's per-channel constants: batch_norm_activation(x, weight,
// bias, running_mean, running_var, ..., training = false, ..., eps,
// activation) is act(x * scale[c] + shift[c]) with these, bit for bit on the
// CPU. For a producer that normalizes its output as it stores it (conv2d's
// Conv2dEpilogue). CPU; running_mean and running_var required, all [C] of
// one dtype (f32 or f64); weight and bias may be undefined (1 and 0).
struct BatchNormInferenceConstants {
  Tensor scale, shift;  // [C], the statistics' dtype
};
BatchNormInferenceConstants batch_norm_inference_constants(const Tensor& weight, const Tensor& bias,
                                                           const Tensor& running_mean,
                                                           const Tensor& running_var, double eps);

struct BatchNorm2dOptions {
  int64_t num_features = 0;  // C
  double eps = 1e-5;
  double momentum = 0.1;
  bool affine = true;               // learn "weight" and "bias"
  bool track_running_stats = true;  // keep running statistics for evaluation
};

// Parameters (affine) "weight" [C] = 1 and "bias" [C] = 0; buffers
// (track_running_stats) "running_mean" [C] = 0, "running_var" [C] = 1 and
// "num_batches_tracked" [] i64 = 0: torchvision's state_dict keys.
// forward normalizes with the batch statistics in training mode, with the
// running ones in evaluation mode; without running statistics it always uses
// the batch's (as nn.BatchNorm2d(track_running_stats=False)).
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(const BatchNorm2dOptions& options);
  explicit BatchNorm2d(int64_t num_features, double eps = 1e-5, double momentum = 0.1,
                       bool affine = true, bool track_running_stats = true);
  Tensor forward(const Tensor& input) override;
  std::string describe() const override;

  const BatchNorm2dOptions& options() const { return options_; }
  // Changes the running-statistics momentum, e.g. to 1/k on the k-th batch of a
  // recalibration, which makes the running statistics a cumulative average.
  void set_momentum(double momentum);
  Tensor weight;               // undefined without affine
  Tensor bias;                 // undefined without affine
  Tensor running_mean;         // undefined without track_running_stats
  Tensor running_var;          // undefined without track_running_stats
  Tensor num_batches_tracked;  // undefined without track_running_stats

 private:
  BatchNorm2dOptions options_;
};

}  // namespace b3
