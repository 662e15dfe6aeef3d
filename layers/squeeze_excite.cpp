// Squeeze-excitation: the module wiring, and the channel_scale op (x * s
// broadcast over H, W) with its backward.
//   d out / d x[n,c,h,w] = s[n,c]
//   d out / d s[n,c]     = sum_{h,w} g[n,c,h,w] * x[n,c,h,w]
// A CUDA x goes to layers/squeeze_excite_cuda_op.cpp (after the shape checks).
#include "layers/squeeze_excite.h"

#include <stdexcept>

#include "autograd/node.h"
#include "layers/graph_input.h"
#include "layers/squeeze_excite_cuda_op.h"
#include "tensor/activation_layout.h"
#include "tensor/ops.h"

namespace b3 {

int64_t make_divisible(double value, int64_t divisor, std::optional<int64_t> min_value) {
  if (divisor <= 0) throw std::invalid_argument("make_divisible: divisor must be positive");
  const int64_t floor_value = min_value.value_or(divisor);
  const auto rounded =
      static_cast<int64_t>(value + static_cast<double>(divisor) / 2.0) / divisor * divisor;
  int64_t result = std::max(floor_value, rounded);
  if (static_cast<double>(result) < 0.9 * value) result += divisor;
  return result;
}

namespace {

void check_scale_shapes(const Tensor& x, const Tensor& scale) {
  if (x.dim() != 4) {
    throw std::invalid_argument("channel_scale: expected a 4-D [N, C, H, W] input, got " +
                                shape_str(x.shape()));
  }
  const Shape expected{x.size(0), x.size(1), 1, 1};
  if (scale.shape() != expected) {
    throw std::invalid_argument("channel_scale: scale has shape " + shape_str(scale.shape()) +
                                ", input " + shape_str(x.shape()) + " needs " +
                                shape_str(expected));
  }
  if (x.dtype() != scale.dtype()) {
    throw std::invalid_argument(std::string("channel_scale: input is ") + dtype_name(x.dtype()) +
                                ", scale is " + dtype_name(scale.dtype()));
  }
}

// out = x * s, or (for backward) the same broadcast product with g in place of x.
Tensor scale_by_channel(const Tensor& x, const Tensor& s_contig) {
  const ActivationLayout layout = activation_layout(x, "channel_scale");
  Tensor out = empty_like(x);
  const int64_t c = x.size(1);
  dispatch_float(x.dtype(), "channel_scale", [&](auto tag) {
    using T = decltype(tag);
    const T* in = static_cast<const T*>(x.data_ptr());
    const T* s = static_cast<const T*>(s_contig.data_ptr());
    T* po = static_cast<T*>(out.data_ptr());
    if (layout.inner() == 1) {  // NHWC: each pixel's C values times the image's C scales
#pragma omp parallel for schedule(static) if (x.numel() > (1 << 16))
      for (int64_t o = 0; o < layout.outer(); ++o) {
        const T* s_image = s + (o / layout.outer_per_image()) * c;
        const T* row_in = in + o * c;
        T* row_out = po + o * c;
#pragma omp simd
        for (int64_t ch = 0; ch < c; ++ch) row_out[ch] = row_in[ch] * s_image[ch];
      }
      return;
    }
#pragma omp parallel for if (x.numel() > (1 << 16))
    for (int64_t o = 0; o < layout.outer(); ++o) {
      const T* s_image = s + (o / layout.outer_per_image()) * c;
      for (int64_t ch = 0; ch < c; ++ch)
        for (int64_t i = 0; i < layout.inner(); ++i)
          po[layout.index(o, ch, i)] = in[layout.index(o, ch, i)] * s_image[ch];
    }
  });
  return out;
}

// grad_s[n, c] = sum over (h, w) of g * x; g and x share one layout.
Tensor scale_gradient(const Tensor& g, const Tensor& x) {
  const ActivationLayout layout = activation_layout(x, "channel_scale backward");
  const int64_t n = x.size(0), c = x.size(1);
  Tensor grad_s = empty({n, c, 1, 1}, TensorOptions(x.dtype()));
  dispatch_float(x.dtype(), "channel_scale", [&](auto tag) {
    using T = decltype(tag);
    const T* pg = static_cast<const T*>(g.data_ptr());
    const T* px = static_cast<const T*>(x.data_ptr());
    T* out = grad_s.data<T>();
#pragma omp parallel for if (x.numel() > (1 << 16))
    for (int64_t image = 0; image < n; ++image) {
      std::vector<double> totals(static_cast<size_t>(c), 0.0);
      double* tp = totals.data();
      if (layout.inner() == 1) {  // NHWC: whole pixel rows, vectorized over channels
        for (int64_t o = image * layout.outer_per_image();
             o < (image + 1) * layout.outer_per_image(); ++o) {
          const T* g_row = pg + o * c;
          const T* x_row = px + o * c;
#pragma omp simd
          for (int64_t ch = 0; ch < c; ++ch)
            tp[ch] += static_cast<double>(g_row[ch]) * static_cast<double>(x_row[ch]);
        }
      } else {
        for (int64_t o = image * layout.outer_per_image();
             o < (image + 1) * layout.outer_per_image(); ++o)
          for (int64_t ch = 0; ch < c; ++ch)
            for (int64_t i = 0; i < layout.inner(); ++i) {
              const int64_t k = layout.index(o, ch, i);
              tp[ch] += static_cast<double>(pg[k]) * static_cast<double>(px[k]);
            }
      }
      for (int64_t ch = 0; ch < c; ++ch)
        out[image * c + ch] = static_cast<T>(totals[static_cast<size_t>(ch)]);
    }
  });
  return grad_s;
}

// Both gradients in one pass over g (NHWC): grad_x = g * s and grad_s[n, c] =
// sum over (h, w) of g * x, the sums in double as in scale_gradient.
std::vector<Tensor> scale_backward_nhwc(const Tensor& g, const Tensor& x, const Tensor& s_contig) {
  const ActivationLayout layout = activation_layout(x, "channel_scale backward");
  const int64_t n = x.size(0), c = x.size(1);
  Tensor grad_x = empty_like(x);
  Tensor grad_s = empty({n, c, 1, 1}, TensorOptions(x.dtype()));
  dispatch_float(x.dtype(), "channel_scale", [&](auto tag) {
    using T = decltype(tag);
    const T* pg = static_cast<const T*>(g.data_ptr());
    const T* px = static_cast<const T*>(x.data_ptr());
    const T* ps = static_cast<const T*>(s_contig.data_ptr());
    T* gx = static_cast<T*>(grad_x.data_ptr());
    T* gs = grad_s.data<T>();
#pragma omp parallel for if (x.numel() > (1 << 16))
    for (int64_t image = 0; image < n; ++image) {
      std::vector<double> totals(static_cast<size_t>(c), 0.0);
      double* tp = totals.data();
      const T* s_image = ps + image * c;
      for (int64_t o = image * layout.outer_per_image(); o < (image + 1) * layout.outer_per_image();
           ++o) {
        const T* g_row = pg + o * c;
        const T* x_row = px + o * c;
        T* out_row = gx + o * c;
#pragma omp simd
        for (int64_t ch = 0; ch < c; ++ch) {
          out_row[ch] = g_row[ch] * s_image[ch];
          tp[ch] += static_cast<double>(g_row[ch]) * static_cast<double>(x_row[ch]);
        }
      }
      for (int64_t ch = 0; ch < c; ++ch) gs[image * c + ch] = static_cast<T>(tp[ch]);
    }
  });
  return {grad_x, grad_s};
}

}  // namespace

Tensor channel_scale(const Tensor& x_in, const Tensor& scale_in) {
  if (x_in.defined() && x_in.device().is_cuda()) {
    check_scale_shapes(x_in, scale_in);
    return cuda_op::channel_scale(x_in, scale_in);
  }
  require_cpu("channel_scale", {x_in, scale_in});
  check_scale_shapes(x_in, scale_in);
  const Tensor x = x_in.detach().contiguous(x_in.suggest_memory_format());
  const Tensor s = scale_in.detach().contiguous();
  Tensor out = scale_by_channel(x, s);
  if (should_record({x_in, scale_in})) {
    const bool need_x = x_in.requires_grad(), need_s = scale_in.requires_grad();
    record_lambda(out, "ChannelScaleBackward", {graph_input(x_in), graph_input(scale_in)},
                  [x, s, need_x, need_s](const Tensor& grad_out) {
                    const Tensor g = align_layout(grad_out, x);
                    if (need_x && need_s && activation_layout(x, "channel_scale").inner() == 1)
                      return scale_backward_nhwc(g, x, s);
                    return std::vector<Tensor>{need_x ? scale_by_channel(g, s) : Tensor(),
                                               need_s ? scale_gradient(g, x) : Tensor()};
                  });
  }
  return out;
}

SqueezeExcitation::SqueezeExcitation(int64_t input_channels, int64_t squeeze_channels,
                                     Generator& gen) {
  if (input_channels <= 0 || squeeze_channels <= 0) {
    throw std::invalid_argument("SqueezeExcitation: channels must be positive, got input " +
                                std::to_string(input_channels) + ", squeeze " +
                                std::to_string(squeeze_channels));
  }
  avgpool = register_module("avgpool", std::make_shared<AdaptiveAvgPool2d>(1));
  Conv2dOptions squeeze;
  squeeze.in_channels = input_channels;
  squeeze.out_channels = squeeze_channels;
  fc1 = register_module("fc1", std::make_shared<Conv2d>(squeeze, gen));
  activation = register_module("activation", std::make_shared<ReLU>());
  Conv2dOptions excite;
  excite.in_channels = squeeze_channels;
  excite.out_channels = input_channels;
  fc2 = register_module("fc2", std::make_shared<Conv2d>(excite, gen));
  scale_activation = register_module("scale_activation", std::make_shared<Hardsigmoid>());
}

Tensor SqueezeExcitation::forward(const Tensor& input) {
  Tensor s = avgpool->forward(input);
  s = activation->forward(fc1->forward(s));
  s = scale_activation->forward(fc2->forward(s));
  // Under autocast the 1x1 convolutions return f16; an f32 input then takes
  // the scale in f32, as torch's type promotion of x * s does (the f16 input
  // of MobileNetV3's blocks needs no cast). CPU tensors are never autocast.
  if (input.device().is_cuda() && input.dtype() == DType::f32 && s.dtype() == DType::f16) {
    s = s.to(DType::f32);
  }
  return channel_scale(input, s);
}

std::string SqueezeExcitation::describe() const {
  return "SqueezeExcitation(" + std::to_string(fc1->options().in_channels) + ", " +
         std::to_string(fc1->options().out_channels) + ")";
}

}  // namespace b3
