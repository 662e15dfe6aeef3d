// A dense 4-D tensor seen as (outer, C, inner) blocks, the one view that lets a
// per-channel kernel run on both memory formats without converting:
//   NCHW: outer = N,         channel stride = H*W, inner = H*W (element (o, c, i) at (o*C +
//   c)*inner + i) NHWC: outer = N*H*W,     channel stride = 1,   inner = 1
// Per-(n, c) kernels also need the batch index of an outer block: n = o / outer_per_image.
#pragma once

#include <cstdint>

#include "tensor/tensor.h"

namespace b3 {

struct ChannelLayout {
  int64_t outer = 0;            // blocks
  int64_t channels = 0;         // C
  int64_t inner = 0;            // contiguous run per (block, channel)
  int64_t outer_per_image = 0;  // blocks per sample: 1 (NCHW) or H*W (NHWC)

  int64_t index(int64_t o, int64_t c, int64_t i) const { return (o * channels + c) * inner + i; }
};

// The layout of `t`, which must be dense NCHW or NHWC 4-D; `op` names the caller in errors.
ChannelLayout channel_layout(const Tensor& t, const char* op);

}  // namespace b3
