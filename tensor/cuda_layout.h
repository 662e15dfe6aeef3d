// How CUDA launchers are told the geometry of a dense 4-D activation: logical
// sizes N, C, H, W (b3's order everywhere) plus the memory format, NCHW
// (contiguous) or NHWC (channels_last). Compiles in every build.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "tensor/tensor.h"

namespace b3::cuda {

struct ActivationLayout {
  int64_t batch = 0;
  int64_t channels = 0;
  int64_t height = 0;
  int64_t width = 0;
  MemoryFormat format = MemoryFormat::contiguous;

  int64_t spatial() const { return height * width; }
  int64_t numel() const { return batch * channels * height * width; }
  bool channels_last() const { return format == MemoryFormat::channels_last; }
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

}  // namespace b3::cuda
