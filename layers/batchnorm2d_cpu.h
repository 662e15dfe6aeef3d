// CPU kernels of batch normalization over a dense 4-D tensor viewed as
// (outer, C, inner) blocks, which covers both memory formats without a copy:
//   NCHW: outer = N,     inner = H*W   element (o, c, i) at (o*C + c)*inner + i
//   NHWC: outer = N*H*W, inner = 1
// Per-channel sums accumulate in double, in an order that depends only on the
// shape (not on the thread count), so results are reproducible.
// Instantiated for float and double in batchnorm2d_cpu.cpp.
#pragma once

#include <cstdint>

namespace b3::cpu {

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

// y = x * scale[c] + shift[c] (the whole forward, with scale and shift folded
// per channel from weight, bias, mean and invstd).
template <typename T>
void batch_norm_scale_shift(const T* x, T* y, const BatchNormLayout& layout, const double* scale,
                            const double* shift);

// sum_g[c] = sum(g), sum_g_centered[c] = sum(g * (x - mean[c])).
template <typename T>
void batch_norm_gradient_sums(const T* g, const T* x, const BatchNormLayout& layout,
                              const double* mean, double* sum_g, double* sum_g_centered);

// gx = gain[c] * (g - mean_g[c] - (x - mean[c]) * projection[c]), PyTorch's
// form of the input gradient (centering x first keeps f32 accurate).
template <typename T>
void batch_norm_input_gradient(const T* g, const T* x, T* gx, const BatchNormLayout& layout,
                               const double* mean, const double* mean_g, const double* projection,
                               const double* gain);

}  // namespace b3::cpu
