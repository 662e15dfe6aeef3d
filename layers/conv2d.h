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
// CPU kernels (conv2d_cpu.cpp): 1x1 as one GEMM on NHWC data, depthwise as
// direct loops vectorized over channels, everything else im2col + GEMM.
// CUDA (conv2d_cuda_op.h): cuDNN in the input's layout, f32 or f16, cast to
// f16 under autocast (tensor/autocast.h); in NHWC the weight is read as KRSC.
#pragma once

#include <cstdint>

#include "layers/module.h"
#include "tensor/random.h"

namespace b3 {

Tensor conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias, int64_t stride = 1,
              int64_t padding = 0, int64_t groups = 1);

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
