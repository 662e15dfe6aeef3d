// conv2d on CUDA tensors (the Tensor-level path of layers/conv2d.h): checks
// the devices and dtypes, hands dense NCHW or NHWC data to cuDNN through the
// launchers of layers/conv2d_cuda.h, and records the autograd node whose
// backward calls cuDNN's backward-data, backward-filter and backward-bias.
// Compiles in every build; without the CUDA backend no CUDA tensor exists, so
// it is never reached there.
#pragma once

#include "layers/conv2d_cpu.h"
#include "tensor/tensor.h"

namespace b3::cuda_op {

// conv2d(input, weight, bias) for tensors on one CUDA device, all f32 or all
// f16 (conv2d() has already applied autocast and checked the shapes, which
// `shape` describes). The output is in the input's memory format. In NHWC the
// weight is handed to cuDNN as KRSC (the weight made channels_last, as
// PyTorch stores a channels_last weight) and its gradient comes back so.
Tensor conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias,
              const cpu::Conv2dShape& shape);

}  // namespace b3::cuda_op
