// 2-D convolution (cross-correlation) with PyTorch's semantics, as
// torch.nn.functional.conv2d and torch.nn.Conv2d, square kernel/stride/padding:
//
//   out[n, co, y, x] = bias[co] + sum_{ci in group(co), ky, kx}
//       weight[co, ci - g0, ky, kx] * in[n, ci, y*stride + ky - pad, x*stride + kx - pad]
//
// input  [N, Cin, H, W] (NCHW or NHWC), weight [Cout, Cin / groups, k, k],
// bias [Cout] or undefined; output [N, Cout, Ho, Wo] with
// Ho = (H + 2 pad - k) / stride + 1, in the input's memory format.
// groups == Cin == Cout is a depthwise convolution.
//
// One op for both devices (conv2d.cpp); the kernels are told the call's
// Conv2dGeometry. CPU (conv2d_cpu.h): NHWC data only (an NCHW input is
// converted on entry and the output back), four algorithms chosen from the
// shape. CUDA (conv2d_cuda.h): cuDNN in the input's layout, f32 or f16, cast
// to f16 under autocast (tensor/autocast.h); in NHWC the weight is read as
// KRSC (channels_last strides), as PyTorch stores a channels_last weight.
#pragma once

#include <cstdint>
#include <string>

#include "layers/activations.h"
#include "layers/module.h"
#include "tensor/random.h"

namespace b3 {

// The shapes of one conv2d call, as the CPU kernels and the cuDNN calls are
// told them (make it with conv2d_geometry(), which fills the output size).
struct Conv2dGeometry {
  int64_t batch = 0;         // N
  int64_t in_channels = 0;   // Cin
  int64_t in_height = 0;     // H
  int64_t in_width = 0;      // W
  int64_t out_channels = 0;  // Cout
  int64_t kernel = 1;        // k (square)
  int64_t stride = 1;
  int64_t padding = 0;
  int64_t groups = 1;
  int64_t out_height = 0;  // Ho = (H + 2 pad - k) / stride + 1
  int64_t out_width = 0;   // Wo = (W + 2 pad - k) / stride + 1
  // The layout of x, y and their gradients as the kernels read and write
  // them (always channels_last for the CPU kernels), and the dtype of every
  // tensor of the call (CPU: f32 or f64, CUDA: f32 or f16).
  MemoryFormat format = MemoryFormat::contiguous;
  DType dtype = DType::f32;

  bool is_depthwise() const { return groups == in_channels && groups == out_channels; }
  bool is_pointwise() const { return kernel == 1 && stride == 1 && padding == 0; }
  // "f16 NHWC x[8, 16, 56, 56] w[16, 1, 3, 3] stride 1 pad 1 groups 16"
  std::string str() const;
};

// The geometry of a convolution of an [batch, in_channels, in_height,
// in_width] input with out_channels k x k filters, output size filled in;
// format and dtype default (set them for the call).
Conv2dGeometry conv2d_geometry(int64_t batch, int64_t in_channels, int64_t in_height,
                               int64_t in_width, int64_t out_channels, int64_t kernel,
                               int64_t stride, int64_t padding, int64_t groups);

Tensor conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias, int64_t stride = 1,
              int64_t padding = 0, int64_t groups = 1);

// A per-output-channel map applied to conv2d's output: act(v * scale[c] +
// shift[c]) (+ residual), scale and shift [Cout] of the input's dtype,
// activation none, relu or hardswish, residual undefined or a tensor of the
// output's shape and dtype. With the constants of
// batch_norm_inference_constants (layers/batchnorm2d.h) it is BatchNorm in
// evaluation mode, the activation after it and a block's residual add.
struct Conv2dEpilogue {
  Tensor scale, shift;
  Activation activation = Activation::none;
  Tensor residual;  // optional: added after the activation, the output's shape
};

// For inference: conv2d, then the epilogue, which the CPU kernels apply to
// each output value as they store it (one pass over the output instead of
// two, bit for bit the values of the separate passes; layers/conv2d_cpu.h).
// CPU only, and refused where gradients would be recorded (the output's
// pre-epilogue values, which a backward would need, are never stored).
Tensor conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias, int64_t stride,
              int64_t padding, int64_t groups, const Conv2dEpilogue& epilogue);

struct Conv2dOptions {
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t kernel_size = 1;
  int64_t stride = 1;
  int64_t padding = 0;
  int64_t groups = 1;
  bool bias = true;
};

// Parameters "weight" [Cout, Cin/groups, k, k] and, with bias, "bias" [Cout],
// initialized as nn.Conv2d does by default (kaiming_uniform with a = sqrt(5):
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both); models re-initialize.
class Conv2d : public Module {
 public:
  Conv2d(const Conv2dOptions& options, Generator& gen);
  Tensor forward(const Tensor& input) override;
  std::string describe() const override;

  const Conv2dOptions& options() const { return options_; }
  Tensor weight;
  Tensor bias;  // undefined when options.bias is false

 private:
  Conv2dOptions options_;
};

}  // namespace b3
