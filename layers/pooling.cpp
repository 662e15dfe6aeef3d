// Global average pooling: forward sums each (n, c) over H*W, backward spreads
// the gradient back evenly. Both memory formats through ChannelLayout. A CUDA
// input goes to layers/pooling_cuda_op.cpp.
#include "layers/pooling.h"

#include <stdexcept>

#include "autograd/node.h"
#include "layers/graph_input.h"
#include "layers/pooling_cuda_op.h"
#include "tensor/activation_layout.h"
#include "tensor/ops.h"

namespace b3 {

namespace {

// x dense in either format -> out [N, C] values (pooled), accumulated in double.
Tensor pool_forward(const Tensor& x) {
  const ActivationLayout layout = activation_layout(x, "adaptive_avg_pool2d");
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  Tensor out = empty({n, c, 1, 1}, TensorOptions(x.dtype()));
  dispatch_float(x.dtype(), "adaptive_avg_pool2d", [&](auto tag) {
    using T = decltype(tag);
    const T* in = static_cast<const T*>(x.data_ptr());
    T* po = out.data<T>();
#pragma omp parallel for if (n * c * hw > (1 << 16))
    for (int64_t image = 0; image < n; ++image) {
      std::vector<double> totals(static_cast<size_t>(c), 0.0);
      double* tp = totals.data();
      if (layout.inner() == 1) {  // NHWC: whole pixel rows, vectorized over channels
        for (int64_t o = image * layout.outer_per_image();
             o < (image + 1) * layout.outer_per_image(); ++o) {
          const T* row = in + o * c;
#pragma omp simd
          for (int64_t ch = 0; ch < c; ++ch) tp[ch] += static_cast<double>(row[ch]);
        }
      } else {
        for (int64_t o = image * layout.outer_per_image();
             o < (image + 1) * layout.outer_per_image(); ++o)
          for (int64_t ch = 0; ch < c; ++ch)
            for (int64_t i = 0; i < layout.inner(); ++i)
              tp[ch] += static_cast<double>(in[layout.index(o, ch, i)]);
      }
      for (int64_t ch = 0; ch < c; ++ch)
        po[image * c + ch] =
            static_cast<T>(totals[static_cast<size_t>(ch)] / static_cast<double>(hw));
    }
  });
  return out;
}

// g [N, C, 1, 1] -> grad_in of `input_shape` in `format`; every (h, w) gets g / (H*W).
Tensor pool_backward(const Tensor& grad_out, const Shape& input_shape, MemoryFormat format) {
  const Tensor g = grad_out.contiguous();
  Tensor grad_in = empty(input_shape, TensorOptions(g.dtype()).with_format(format));
  const ActivationLayout layout = activation_layout(grad_in, "adaptive_avg_pool2d backward");
  const int64_t c = input_shape[1], hw = input_shape[2] * input_shape[3];
  dispatch_float(g.dtype(), "adaptive_avg_pool2d", [&](auto tag) {
    using T = decltype(tag);
    const T* pg = static_cast<const T*>(g.data_ptr());
    T* out = static_cast<T*>(grad_in.data_ptr());
    const T inv_area = T(1) / static_cast<T>(hw);
    if (layout.inner() == 1) {  // NHWC: every pixel row of an image is g[n, :] / (H*W)
#pragma omp parallel for schedule(static) if (layout.outer() * c > (1 << 16))
      for (int64_t o = 0; o < layout.outer(); ++o) {
        const T* g_image = pg + (o / layout.outer_per_image()) * c;
        T* row = out + o * c;
#pragma omp simd
        for (int64_t ch = 0; ch < c; ++ch) row[ch] = g_image[ch] * inv_area;
      }
      return;
    }
#pragma omp parallel for if (layout.outer() * c * layout.inner() > (1 << 16))
    for (int64_t o = 0; o < layout.outer(); ++o) {
      const int64_t image = o / layout.outer_per_image();
      for (int64_t ch = 0; ch < c; ++ch)
        for (int64_t i = 0; i < layout.inner(); ++i)
          out[layout.index(o, ch, i)] = pg[image * c + ch] * inv_area;
    }
  });
  return grad_in;
}

// A 4-D input with a non-empty plane (the mean over an empty one is undefined).
void check_pool_input(const Tensor& input) {
  if (input.dim() != 4) {
    throw std::invalid_argument("adaptive_avg_pool2d: expected a 4-D [N, C, H, W] input, got " +
                                shape_str(input.shape()));
  }
  if (input.size(2) == 0 || input.size(3) == 0) {
    throw std::invalid_argument("adaptive_avg_pool2d: empty spatial size in " +
                                shape_str(input.shape()));
  }
}

}  // namespace

Tensor adaptive_avg_pool2d(const Tensor& input, int64_t output_size) {
  if (output_size != 1) {
    throw std::invalid_argument("adaptive_avg_pool2d: output size " + std::to_string(output_size) +
                                " is not supported (only 1, global pooling)");
  }
  if (input.defined() && input.device().is_cuda()) {
    check_pool_input(input);
    return cuda_op::global_avg_pool2d(input);
  }
  require_cpu("adaptive_avg_pool2d", {input});
  check_pool_input(input);
  const Tensor x = input.detach().contiguous(input.suggest_memory_format());
  Tensor out = pool_forward(x);
  if (should_record({input})) {
    const Shape input_shape = input.shape();
    const MemoryFormat format = x.suggest_memory_format();
    record_lambda(out, "AdaptiveAvgPool2dBackward", {graph_input(input)},
                  [input_shape, format](const Tensor& g) {
                    return std::vector<Tensor>{pool_backward(g, input_shape, format)};
                  });
  }
  return out;
}

AdaptiveAvgPool2d::AdaptiveAvgPool2d(int64_t output_size) : output_size_(output_size) {
  if (output_size != 1) {
    throw std::invalid_argument("AdaptiveAvgPool2d: output size " + std::to_string(output_size) +
                                " is not supported (only 1)");
  }
}

}  // namespace b3
