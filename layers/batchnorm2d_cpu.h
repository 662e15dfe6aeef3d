// CPU kernels of batch normalization over a dense 4-D tensor viewed as
// (outer, C, inner) blocks, which covers both memory formats without a copy:
//   NCHW: outer = N,     inner = H*W   element (o, c, i) at (o*C + c)*inner + i
//   NHWC: outer = N*H*W, inner = 1
// Per-channel sums accumulate in double, in an order that depends only on the
// shape (not on the thread count), so results are reproducible.
// Instantiated for float and double in batchnorm2d_cpu.cpp.
//
// The elementwise kernels can apply an activation after the normalization
// (batch_norm_activation, layers/batchnorm_activation.h): the forward writes
// act(y) and never stores y = x * scale[c] + shift[c]; the backward kernels take
// g = dL/d act(y), recompute y from x exactly as the forward computed it (in T,
// from the same scale and shift) and apply act'(y) inline. With `none` they are
// plain batch normalization.
#pragma once

#include <cstdint>

#include "tensor/tensor.h"

namespace b3::cpu {

// The activation after the normalization, with PyTorch's definitions and
// derivatives (layers/activations.h): relu'(y) = (y > 0), hardswish'(y) = 0 for
// y < -3, y / 3 + 1/2 for -3 <= y <= 3, 1 for y > 3.
enum class BatchNormActivation { none, relu, hardswish };

// What the backward kernels need to apply the activation's derivative: its
// kind and the per-channel scale and shift the forward normalized with (not
// read, and may be null, when kind is none).
struct NormalizedActivation {
  BatchNormActivation kind = BatchNormActivation::none;
  const double* scale = nullptr;
  const double* shift = nullptr;
};

struct BatchNormLayout {
  int64_t outer = 0;
  int64_t channels = 0;
  int64_t inner = 0;
  int64_t per_channel() const { return outer * inner; }  // M, the values of one channel
};

// mean[c] and the biased variance var[c] = sum((x - mean)^2) / M, in one pass
// over x (sums of x - shift[c], shift[c] a value of channel c; see the .cpp).
template <typename T>
void batch_norm_statistics(const T* x, const BatchNormLayout& layout, double* mean, double* var);

// y = act(x * scale[c] + shift[c]) (the whole forward, with scale and shift
// folded per channel from weight, bias, mean and invstd), in one pass.
template <typename T>
void batch_norm_scale_shift(const T* x, T* y, const BatchNormLayout& layout, const double* scale,
                            const double* shift,
                            BatchNormActivation activation = BatchNormActivation::none);

// sum_g[c] = sum(gy), sum_g_centered[c] = sum(gy * (x - mean[c])), where
// gy = g * act'(y) is dL/dy (gy = g without an activation).
template <typename T>
void batch_norm_gradient_sums(const T* g, const T* x, const BatchNormLayout& layout,
                              const double* mean, double* sum_g, double* sum_g_centered,
                              const NormalizedActivation& activation = {});

// gx = gain[c] * (gy - mean_g[c] - (x - mean[c]) * projection[c]), gy as above:
// PyTorch's form of the input gradient (centering x first keeps f32 accurate).
template <typename T>
void batch_norm_input_gradient(const T* g, const T* x, T* gx, const BatchNormLayout& layout,
                               const double* mean, const double* mean_g, const double* projection,
                               const double* gain, const NormalizedActivation& activation = {});

// batch_norm2d (layers/batchnorm2d.h) on a CPU input, followed by `activation`
// in the same passes: the CPU implementation of both batch_norm2d (none) and
// batch_norm_activation (layers/batchnorm_activation.h). Defined in
// batchnorm2d.cpp, next to the argument checks, statistics and autograd node
// it shares with batch_norm2d.
Tensor batch_norm_with_activation(const Tensor& input, const Tensor& weight, const Tensor& bias,
                                  const Tensor& running_mean, const Tensor& running_var,
                                  const Tensor& num_batches_tracked, bool training, double momentum,
                                  double eps, BatchNormActivation activation);

}  // namespace b3::cpu
