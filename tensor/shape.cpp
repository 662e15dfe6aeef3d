// Shapes and strides: printing, element counts, memory format names and the
// dense strides of a shape in either memory format (declared in tensor.h).
#include <algorithm>
#include <sstream>
#include <stdexcept>

#include "tensor/tensor.h"

namespace b3 {

std::string shape_str(const Shape& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

const char* memory_format_name(MemoryFormat format) {
  return format == MemoryFormat::contiguous ? "contiguous" : "channels_last";
}

MemoryFormat parse_memory_format(const std::string& name, const std::string& what) {
  if (name == "nchw") return MemoryFormat::contiguous;
  if (name == "nhwc") return MemoryFormat::channels_last;
  throw std::invalid_argument(what + " must be nchw or nhwc, got '" + name + "'");
}

Shape dense_strides(const Shape& shape, MemoryFormat format) {
  Shape strides(shape.size());
  if (format == MemoryFormat::channels_last) {
    if (shape.size() != 4) {
      throw std::invalid_argument("channels_last needs a 4-D (N, C, H, W) shape, got " +
                                  shape_str(shape));
    }
    const int64_t c = shape[1], h = shape[2], w = shape[3];
    strides = {h * w * c, 1, w * c, c};
    return strides;
  }
  int64_t running = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = running;
    running *= std::max<int64_t>(shape[i], 1);
  }
  return strides;
}

}  // namespace b3
