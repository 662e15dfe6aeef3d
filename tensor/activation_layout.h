// The geometry a per-channel kernel is handed, on the CPU and on CUDA alike:
// a dense 4-D activation's logical sizes N, C, H, W (b3's order everywhere)
// and its memory format, NCHW (contiguous) or NHWC (channels_last).
//
// Both formats are one picture: `outer()` blocks of C channels, each channel
// a run of `inner()` contiguous values, element (o, c, i) at
// (o * C + c) * inner + i:
//   NCHW: outer = N,          inner = H*W
//   NHWC: outer = N * H * W,  inner = 1
// so a kernel written against (outer, C, inner) runs on either format without
// a conversion. Per-(n, c) kernels also need the sample of block o:
// n = o / outer_per_image(). Compiles in every build (no CUDA header).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "tensor/tensor.h"

namespace b3 {

struct ActivationLayout {
  int64_t batch = 0;
  int64_t channels = 0;
  int64_t height = 0;
  int64_t width = 0;
  MemoryFormat format = MemoryFormat::contiguous;

  int64_t spatial() const { return height * width; }
  int64_t numel() const { return batch * channels * height * width; }
  bool channels_last() const { return format == MemoryFormat::channels_last; }
  // M, the values of one channel: N * H * W.
  int64_t per_channel() const { return batch * spatial(); }

  // The (outer, C, inner) view described at the top.
  int64_t outer() const { return channels_last() ? batch * spatial() : batch; }
  int64_t inner() const { return channels_last() ? 1 : spatial(); }
  int64_t outer_per_image() const { return channels_last() ? spatial() : 1; }
  int64_t index(int64_t o, int64_t c, int64_t i) const { return (o * channels + c) * inner() + i; }

  // Where element (n, c, h, w) sits in a dense tensor of this layout.
  int64_t offset(int64_t n, int64_t c, int64_t h, int64_t w) const {
    return channels_last() ? ((n * height + h) * width + w) * channels + c
                           : ((n * channels + c) * height + h) * width + w;
  }
  std::string str() const {  // "[N, C, H, W] channels_last"
    std::string text("[");   // (appends: GCC 12 misreports "literal" + string&& at -O3)
    text += std::to_string(batch);
    text += ", ";
    text += std::to_string(channels);
    text += ", ";
    text += std::to_string(height);
    text += ", ";
    text += std::to_string(width);
    text += "] ";
    text += memory_format_name(format);
    return text;
  }
  // Throws std::invalid_argument naming `op` if a size is negative or the
  // element count does not fit in int64_t.
  void check(const char* op) const {
    if (batch < 0 || channels < 0 || height < 0 || width < 0) {
      throw std::invalid_argument(std::string(op) + ": negative size in " + str());
    }
    int64_t product = 0;
    if (__builtin_mul_overflow(batch, channels, &product) ||
        __builtin_mul_overflow(product, height, &product) ||
        __builtin_mul_overflow(product, width, &product)) {
      throw std::invalid_argument(std::string(op) + ": " + str() + " has too many elements");
    }
  }
};

// `t` as a dense 4-D activation in NCHW or NHWC: itself when it already is,
// else a copy in its suggested format (on the same device).
Tensor dense_activation(const Tensor& t);

// The layout of a dense 4-D NCHW or NHWC tensor (dense_activation's output);
// throws std::invalid_argument naming `op` otherwise. A tensor that is dense
// in both formats (C == 1, or H == W == 1) counts as NCHW, as
// Tensor::suggest_memory_format says.
ActivationLayout activation_layout(const Tensor& t, const char* op);

}  // namespace b3
