// The (outer, C, inner) view of a dense NCHW or NHWC tensor.
#include "layers/channel_layout.h"

#include <stdexcept>
#include <string>

namespace b3 {

ChannelLayout channel_layout(const Tensor& t, const char* op) {
  if (t.dim() != 4) {
    throw std::invalid_argument(std::string(op) + ": expected a 4-D [N, C, H, W] input, got " +
                                shape_str(t.shape()));
  }
  const int64_t n = t.size(0), c = t.size(1), hw = t.size(2) * t.size(3);
  if (t.suggest_memory_format() == MemoryFormat::channels_last) return {n * hw, c, 1, hw};
  if (t.is_contiguous()) return {n, c, hw, 1};
  throw std::invalid_argument(std::string(op) + ": input must be dense NCHW or NHWC, got " +
                              t.str());
}

}  // namespace b3
