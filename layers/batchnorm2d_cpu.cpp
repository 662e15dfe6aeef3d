// CPU kernels of batch normalization + activation (see batchnorm2d_cpu.h):
// four loops (statistics, normalize, gradient sums, input gradient) and the
// three entry points that run them with the per-channel arithmetic between.
//
// Elementwise loops run over (block, channel) planes (NCHW) or rows (NHWC),
// the innermost loop contiguous in memory; the reductions are
// batchnorm2d_cpu_reduce.h's. Each loop is one template over the activation
// that follows the normalization (Identity for plain batch normalization),
// so BatchNorm with and without an activation share every loop.
#include "layers/batchnorm2d_cpu.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "layers/batchnorm2d_cpu_reduce.h"
#include "layers/normalized_activation_cpu.h"
#include "tensor/elementwise_cpu.h"

namespace b3::cpu {

namespace {

using namespace batch_norm_detail;

// What the backward loops need to apply the activation's derivative: its
// kind and the per-channel scale and shift the forward normalized with (not
// read when kind is none).
struct NormalizedActivation {
  Activation kind = Activation::none;
  const double* scale = nullptr;
  const double* shift = nullptr;
};

template <typename T>
std::vector<T> to_type(const double* values, int64_t n) {
  return std::vector<T>(values, values + n);
}

// An activation's scale or shift in T; zeros (never used) without an activation.
template <typename T>
std::vector<T> activation_constants(const NormalizedActivation& activation, const double* values,
                                    int64_t n) {
  if (activation.kind == Activation::none) return std::vector<T>(static_cast<size_t>(n));
  return to_type<T>(values, n);
}

// One pass over x: per channel, the sums S1 = sum(d) and S2 = sum(d^2) of
// d = x - shift[c], with shift[c] one of the channel's own values (its first).
// Then mean = shift + S1 / M and var = (S2 - S1^2 / M) / M. Shifting by a value
// of the data keeps S1 / M of the order of the standard deviation, so the
// subtraction does not cancel (the "shifted data" algorithm), and the sums
// are in double; it reads x once instead of twice.
template <typename T>
void batch_norm_statistics(const T* x, const ActivationLayout& layout, double* mean, double* var) {
  const int64_t channels = layout.channels;
  const int64_t inner = layout.inner();
  const double count = static_cast<double>(layout.per_channel());
  std::vector<double> shift(static_cast<size_t>(channels));
  for (int64_t c = 0; c < channels; ++c) shift[static_cast<size_t>(c)] = double(x[c * inner]);
  const double* sh = shift.data();
  std::vector<double> sums(static_cast<size_t>(2 * channels));
  sum_per_channel<2>(
      layout,
      [x, sh, inner](int64_t begin, int64_t c, std::array<double, 2>& total) {
        double s1 = 0.0, s2 = 0.0;
        const double shift_c = sh[c];
#pragma omp simd reduction(+ : s1, s2)
        for (int64_t i = 0; i < inner; ++i) {
          const double d = double(x[begin + i]) - shift_c;
          s1 += d;
          s2 += d * d;
        }
        total[0] += s1;
        total[1] += s2;
      },
      [x, sh, channels](int64_t first_row, int64_t end_row, double* block_sums) {
        // d = x - shift: the terms d and d^2 (b is x again, unused).
        sum_rows_by_channel(
            x, x, channels, first_row, end_row, block_sums,
            [](auto value, auto, auto shift_c) {
              const auto d = widen(value) - shift_c;
              return std::pair{d, d * d};
            },
            sh);
      },
      sums.data());
  for (int64_t c = 0; c < channels; ++c) {
    const double s1 = sums[static_cast<size_t>(c)];
    const double s2 = sums[static_cast<size_t>(channels + c)];
    mean[c] = sh[c] + s1 / count;
    var[c] = std::max(0.0, (s2 - s1 * s1 / count) / count);
  }
}

// NCHW: each (image, channel) plane with its channel's constants. (NHWC runs
// NhwcNormalizedActivation, below.)
template <typename T>
void batch_norm_scale_shift_planes(const T* x, T* y, const ActivationLayout& layout,
                                   const double* scale, const double* shift,
                                   Activation activation) {
  const int64_t channels = layout.channels;
  const int64_t inner = layout.inner();
  const std::vector<T> s = to_type<T>(scale, channels);
  const std::vector<T> b = to_type<T>(shift, channels);
  const bool parallel = layout.per_channel() * channels > kParallelThreshold;
  with_activation(activation, [&](auto act) {
    using Act = decltype(act);
    const ScaleShiftActivation<Act> op;
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
    for (int64_t o = 0; o < layout.outer(); ++o) {
      for (int64_t c = 0; c < channels; ++c) {
        const int64_t base = (o * channels + c) * inner;
        const T sc = s[c];
        const T sh = b[c];
#pragma omp simd
        for (int64_t i = 0; i < inner; ++i) y[base + i] = op(x[base + i], sc, sh);
      }
    }
  });
}

// dL/dx of one element from g = dL/d act(y), x and its channel's constants
// (mean, mean_g, projection, gain, and the forward's scale and shift).
template <typename Act>
struct InputGradientOf {
  template <typename V>
  V operator()(V g, V x, V mean, V mean_g, V projection, V gain, V scale, V shift) const {
    return gain * (Act::gradient(x * scale + shift, g) - mean_g - (x - mean) * projection);
  }
};

// The backward kernels below take g = dL/d act(y) and form gy = dL/dy as
// Act::gradient(y, g), with y = x * scale + shift recomputed in T from the
// same T constants as the forward (Identity: gy = g, y unused).
template <typename T>
void batch_norm_gradient_sums(const T* g, const T* x, const ActivationLayout& layout,
                              const double* mean, double* sum_g, double* sum_g_centered,
                              const NormalizedActivation& activation) {
  const int64_t channels = layout.channels;
  const int64_t inner = layout.inner();
  const std::vector<T> scale = activation_constants<T>(activation, activation.scale, channels);
  const std::vector<T> shift = activation_constants<T>(activation, activation.shift, channels);
  const T* sc = scale.data();
  const T* sh = shift.data();
  std::vector<double> sums(static_cast<size_t>(2 * channels));
  with_activation(activation.kind, [&](auto act) {
    using Act = decltype(act);
    sum_per_channel<2>(
        layout,
        [g, x, mean, sc, sh, inner](int64_t begin, int64_t c, std::array<double, 2>& total) {
          double sg = 0.0, sgc = 0.0;
          const double mean_c = mean[c];
          const T scale_c = sc[c], shift_c = sh[c];
#pragma omp simd reduction(+ : sg, sgc)
          for (int64_t i = 0; i < inner; ++i) {
            const T xe = x[begin + i];
            const double gy = double(Act::gradient(T(xe * scale_c + shift_c), g[begin + i]));
            sg += gy;
            sgc += gy * (double(xe) - mean_c);
          }
          total[0] += sg;
          total[1] += sgc;
        },
        [g, x, mean, sc, sh, channels](int64_t first_row, int64_t end_row, double* block_sums) {
          sum_rows_by_channel(
              g, x, channels, first_row, end_row, block_sums,
              [](auto ge, auto xe, auto mean_c, auto scale_c, auto shift_c) {
                const auto gy = widen(Act::gradient(xe * scale_c + shift_c, ge));
                return std::pair{gy, gy * (widen(xe) - mean_c)};
              },
              mean, sc, sh);
        },
        sums.data());
  });
  std::copy(sums.begin(), sums.begin() + channels, sum_g);
  std::copy(sums.begin() + channels, sums.end(), sum_g_centered);
}

template <typename T>
void batch_norm_input_gradient(const T* g, const T* x, T* gx, const ActivationLayout& layout,
                               const double* mean, const double* mean_g, const double* projection,
                               const double* gain, const NormalizedActivation& activation) {
  const int64_t channels = layout.channels;
  const int64_t inner = layout.inner();
  const std::vector<T> m = to_type<T>(mean, channels);
  const std::vector<T> mg = to_type<T>(mean_g, channels);
  const std::vector<T> pr = to_type<T>(projection, channels);
  const std::vector<T> k = to_type<T>(gain, channels);
  const std::vector<T> s = activation_constants<T>(activation, activation.scale, channels);
  const std::vector<T> b = activation_constants<T>(activation, activation.shift, channels);
  const bool parallel = layout.per_channel() * channels > kParallelThreshold;
  with_activation(activation.kind, [&](auto act) {
    using Act = decltype(act);
    if (inner > 1) {
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
      for (int64_t o = 0; o < layout.outer(); ++o) {
        for (int64_t c = 0; c < channels; ++c) {
          const int64_t base = (o * channels + c) * inner;
          const T mc = m[c], mgc = mg[c], prc = pr[c], kc = k[c], sc = s[c], sh = b[c];
#pragma omp simd
          for (int64_t i = 0; i < inner; ++i) {
            const T xe = x[base + i];
            const T gy = Act::gradient(T(xe * sc + sh), g[base + i]);
            gx[base + i] = kc * (gy - mgc - (xe - mc) * prc);
          }
        }
      }
      return;
    }
    // NHWC: one flat pass, the per-channel constants as periodic patterns.
    const int64_t period = channel_period<T>(channels);
    const int64_t span = period + Vec64<T>::lanes;
    std::vector<T> patterns(static_cast<size_t>(6 * span));
    const auto pattern_of = [&](int slot, const std::vector<T>& values) {
      return make_periodic(
          patterns.data() + slot * span, period, [&](int64_t c) { return values[c]; }, channels);
    };
    map_elements(layout.outer() * channels, gx, period, InputGradientOf<Act>{}, g, x,
                 pattern_of(0, m), pattern_of(1, mg), pattern_of(2, pr), pattern_of(3, k),
                 pattern_of(4, s), pattern_of(5, b));
  });
}

}  // namespace

namespace {

// A per-channel argument as doubles, or `fallback` for each channel when null.
template <typename T>
std::vector<double> channel_values(const T* values, int64_t channels, double fallback) {
  if (values == nullptr) return std::vector<double>(static_cast<size_t>(channels), fallback);
  return std::vector<double>(values, values + channels);
}

// buffer[c] = (1 - momentum) * buffer[c] + momentum * value[c], in place.
template <typename T>
void blend_into(T* buffer, const std::vector<double>& value, double momentum) {
  for (size_t c = 0; c < value.size(); ++c) {
    buffer[c] =
        static_cast<T>((1.0 - momentum) * static_cast<double>(buffer[c]) + momentum * value[c]);
  }
}

// scale = weight * invstd and shift = bias - mean * scale, per channel: the
// forward's one multiply-add per element, which the backward recomputes.
struct ScaleShift {
  std::vector<double> scale, shift;
};
template <typename T>
ScaleShift scale_shift_of(const T* weight, const T* bias, const double* mean, const double* invstd,
                          int64_t channels) {
  const std::vector<double> w = channel_values(weight, channels, 1.0);
  const std::vector<double> b = channel_values(bias, channels, 0.0);
  ScaleShift folded{std::vector<double>(static_cast<size_t>(channels)),
                    std::vector<double>(static_cast<size_t>(channels))};
  for (size_t c = 0; c < folded.scale.size(); ++c) {
    folded.scale[c] = w[c] * invstd[c];
    folded.shift[c] = b[c] - mean[c] * folded.scale[c];
  }
  return folded;
}

// out = act(x * scale + shift) from the statistics that normalize.
template <typename T>
void normalize(const T* x, const T* weight, const T* bias, const double* mean, const double* invstd,
               T* out, const ActivationLayout& layout, Activation activation) {
  if (layout.numel() == 0) return;
  if (layout.inner() == 1) {  // NHWC: one flat pass, the constants as periodic patterns
    NhwcNormalizedActivation<T>(weight, bias, mean, invstd, layout.channels, activation)
        .apply_parallel(x, out, layout.outer());
    return;
  }
  const ScaleShift folded = scale_shift_of(weight, bias, mean, invstd, layout.channels);
  batch_norm_scale_shift_planes(x, out, layout, folded.scale.data(), folded.shift.data(),
                                activation);
}

}  // namespace

template <typename T>
NhwcNormalizedActivation<T>::NhwcNormalizedActivation(const T* weight, const T* bias,
                                                      const double* save_mean,
                                                      const double* save_invstd, int64_t channels,
                                                      Activation activation)
    : channels_(channels), period_(channel_period<T>(channels)), activation_(activation) {
  with_activation(activation, [](auto) {});  // a clear error for an activation not fused
  const ScaleShift folded = scale_shift_of(weight, bias, save_mean, save_invstd, channels);
  const std::vector<T> s = to_type<T>(folded.scale.data(), channels);
  const std::vector<T> b = to_type<T>(folded.shift.data(), channels);
  const int64_t pattern = period_ + Vec64<T>::lanes;
  patterns_.resize(static_cast<size_t>(2 * pattern));
  make_periodic(
      patterns_.data(), period_, [&](int64_t c) { return s[c]; }, channels);
  make_periodic(
      patterns_.data() + pattern, period_, [&](int64_t c) { return b[c]; }, channels);
}

template <typename T>
void NhwcNormalizedActivation<T>::apply(const T* x, T* out, int64_t pixels) const {
  const Periodic<T> scale{patterns_.data()};
  const Periodic<T> shift{patterns_.data() + period_ + Vec64<T>::lanes};
  with_activation(activation_, [&](auto act) {
    map_range(0, pixels * channels_, out, period_, false, ScaleShiftActivation<decltype(act)>{}, x,
              scale, shift);
  });
}

template <typename T>
void NhwcNormalizedActivation<T>::apply_parallel(const T* x, T* out, int64_t pixels) const {
  const Periodic<T> scale{patterns_.data()};
  const Periodic<T> shift{patterns_.data() + period_ + Vec64<T>::lanes};
  with_activation(activation_, [&](auto act) {
    map_elements(pixels * channels_, out, period_, ScaleShiftActivation<decltype(act)>{}, x, scale,
                 shift);
  });
}

template <typename T>
void batch_norm_forward_training(const T* x, const T* weight, const T* bias, T* running_mean,
                                 T* running_var, T* out, double* save_mean, double* save_invstd,
                                 const ActivationLayout& layout, double momentum, double eps,
                                 Activation activation) {
  const int64_t channels = layout.channels, count = layout.per_channel();
  const size_t cs = static_cast<size_t>(channels);
  std::vector<double> var(cs, 0.0);
  std::fill(save_mean, save_mean + channels, 0.0);
  if (count > 0) {
    batch_norm_statistics(x, layout, save_mean, var.data());
    if (running_mean != nullptr) {
      // running_var tracks the unbiased variance: var * M / (M - 1).
      std::vector<double> unbiased(cs);
      const double correction = static_cast<double>(count) / static_cast<double>(count - 1);
      for (size_t c = 0; c < cs; ++c) unbiased[c] = var[c] * correction;
      blend_into(running_mean, std::vector<double>(save_mean, save_mean + channels), momentum);
      blend_into(running_var, unbiased, momentum);
    }
  }
  for (size_t c = 0; c < cs; ++c) save_invstd[c] = 1.0 / std::sqrt(var[c] + eps);
  normalize(x, weight, bias, save_mean, save_invstd, out, layout, activation);
}

namespace {

// Evaluation mode's mean and 1 / sqrt(var + eps), in double, per channel.
template <typename T>
void inference_statistics(const T* running_mean, const T* running_var, double eps, int64_t channels,
                          double* mean, double* invstd) {
  for (int64_t c = 0; c < channels; ++c) {
    mean[c] = static_cast<double>(running_mean[c]);
    invstd[c] = 1.0 / std::sqrt(static_cast<double>(running_var[c]) + eps);
  }
}

}  // namespace

template <typename T>
void batch_norm_forward_inference(const T* x, const T* weight, const T* bias, const T* running_mean,
                                  const T* running_var, T* out, double* save_mean,
                                  double* save_invstd, const ActivationLayout& layout, double eps,
                                  Activation activation) {
  inference_statistics(running_mean, running_var, eps, layout.channels, save_mean, save_invstd);
  normalize(x, weight, bias, save_mean, save_invstd, out, layout, activation);
}

namespace {

// The per-channel constants of the backward's input gradient, after its
// sums (one pass over g and x when anything needs them); writes grad_weight
// and grad_bias when they are not null.
struct InputGradientConstants {
  ScaleShift folded;  // the forward's scale and shift, for act'(y)
  std::vector<double> mean_g, projection, gain;
};
template <typename T>
InputGradientConstants backward_constants(const T* x, const T* grad_out, const T* weight,
                                          const T* bias, const double* save_mean,
                                          const double* save_invstd, bool need_grad_x,
                                          T* grad_weight, T* grad_bias,
                                          const ActivationLayout& layout, bool training,
                                          Activation activation) {
  const int64_t channels = layout.channels;
  const size_t cs = static_cast<size_t>(channels);
  const double count = static_cast<double>(layout.per_channel());
  InputGradientConstants k;
  // The forward's constants, recomputed from the same inputs: the same bits.
  k.folded = scale_shift_of(weight, bias, save_mean, save_invstd, channels);
  const NormalizedActivation act{activation, k.folded.scale.data(), k.folded.shift.data()};
  std::vector<double> sum_g(cs, 0.0), sum_g_centered(cs, 0.0);
  const bool need_sums =
      grad_weight != nullptr || grad_bias != nullptr || (need_grad_x && training);
  if (need_sums && layout.per_channel() > 0) {
    batch_norm_gradient_sums(grad_out, x, layout, save_mean, sum_g.data(), sum_g_centered.data(),
                             act);
  }
  const std::vector<double> w = channel_values(weight, channels, 1.0);
  k.mean_g.assign(cs, 0.0);
  k.projection.assign(cs, 0.0);
  k.gain.resize(cs);
  for (size_t c = 0; c < cs; ++c) {
    k.gain[c] = w[c] * save_invstd[c];
    if (training && count > 0) {
      k.mean_g[c] = sum_g[c] / count;
      k.projection[c] = sum_g_centered[c] * save_invstd[c] * save_invstd[c] / count;
    }
  }
  for (size_t c = 0; c < cs; ++c) {
    if (grad_weight != nullptr) grad_weight[c] = static_cast<T>(sum_g_centered[c] * save_invstd[c]);
    if (grad_bias != nullptr) grad_bias[c] = static_cast<T>(sum_g[c]);
  }
  return k;
}

}  // namespace

template <typename T>
void batch_norm_backward(const T* x, const T* grad_out, const T* weight, const T* bias,
                         const double* save_mean, const double* save_invstd, T* grad_x,
                         T* grad_weight, T* grad_bias, const ActivationLayout& layout,
                         bool training, Activation activation) {
  const InputGradientConstants k =
      backward_constants(x, grad_out, weight, bias, save_mean, save_invstd, grad_x != nullptr,
                         grad_weight, grad_bias, layout, training, activation);
  if (grad_x != nullptr) {
    const NormalizedActivation act{activation, k.folded.scale.data(), k.folded.shift.data()};
    batch_norm_input_gradient(grad_out, x, grad_x, layout, save_mean, k.mean_g.data(),
                              k.projection.data(), k.gain.data(), act);
  }
}

template <typename T>
NhwcBatchNormInputGradient<T>::NhwcBatchNormInputGradient(
    const T* x, const T* grad_out, const T* weight, const T* bias, const double* save_mean,
    const double* save_invstd, const ActivationLayout& layout, bool training, Activation activation,
    T* grad_weight, T* grad_bias)
    : x_(x),
      grad_out_(grad_out),
      channels_(layout.channels),
      elements_(layout.numel()),
      period_(channel_period<T>(layout.channels)),
      activation_(activation) {
  if (layout.inner() != 1) {
    throw std::invalid_argument("cpu::NhwcBatchNormInputGradient: the layout must be NHWC");
  }
  const InputGradientConstants k =
      backward_constants(x, grad_out, weight, bias, save_mean, save_invstd, true, grad_weight,
                         grad_bias, layout, training, activation);
  const NormalizedActivation act{activation, k.folded.scale.data(), k.folded.shift.data()};
  const int64_t span = period_ + Vec64<T>::lanes;
  patterns_.resize(static_cast<size_t>(6 * span));
  const std::vector<T> values[6] = {to_type<T>(save_mean, channels_),
                                    to_type<T>(k.mean_g.data(), channels_),
                                    to_type<T>(k.projection.data(), channels_),
                                    to_type<T>(k.gain.data(), channels_),
                                    activation_constants<T>(act, act.scale, channels_),
                                    activation_constants<T>(act, act.shift, channels_)};
  for (int slot = 0; slot < 6; ++slot) {
    make_periodic(
        patterns_.data() + slot * span, period_, [&](int64_t c) { return values[slot][c]; },
        channels_);
  }
}

template <typename T>
void NhwcBatchNormInputGradient<T>::rows(int64_t first, int64_t count, T* out) const {
  // batch_norm_backward's pass (map_elements over the whole tensor) computes
  // element i in a vector when i < whole_vectors, on its own after: a
  // compiler may contract the formula differently for the two (it does, in
  // places), so each element here is computed the way that pass computes it.
  constexpr int64_t lanes = Vec64<T>::lanes;
  const int64_t span = period_ + lanes;
  const int64_t whole_vectors = elements_ / lanes * lanes;
  const int64_t begin = first * channels_, end = begin + count * channels_;
  // The pattern of constant `slot` for a run from element i: from i's
  // channel on. Whole periods fit only from channel 0 (a run of whole
  // vectors starts there); a run that starts elsewhere is one vector or a
  // tail of fewer values, which fit in the pattern's extra `lanes` values.
  const auto pattern_at = [&](int slot, int64_t i) {
    return Periodic<T>{patterns_.data() + slot * span + i % channels_};
  };
  with_activation(activation_, [&](auto act) {
    const InputGradientOf<decltype(act)> op;
    // Elements [from, to) into dst (to - from whole vectors, or a tail
    // computed one by one); map_range reads the patterns from phase 0.
    const auto run = [&](int64_t from, int64_t to, T* dst) {
      map_range(0, to - from, dst, period_, false, op, grad_out_ + from, x_ + from,
                pattern_at(0, from), pattern_at(1, from), pattern_at(2, from), pattern_at(3, from),
                pattern_at(4, from), pattern_at(5, from));
    };
    const int64_t body_end = begin + (std::min(end, whole_vectors) - begin) / lanes * lanes;
    if (body_end > begin) run(begin, body_end, out);
    int64_t i = std::max(begin, body_end);
    if (i < std::min(end, whole_vectors)) {
      // A partial vector inside the vector part: the whole vector that ends
      // where that part would (or at its end), copied from.
      const int64_t window = std::min(i, whole_vectors - lanes);
      T values[lanes];
      run(window, window + lanes, values);
      const int64_t stop = std::min(end, whole_vectors);
      std::copy(values + (i - window), values + (stop - window), out + (i - begin));
      i = stop;
    }
    if (i < end) run(i, end, out + (i - begin));  // past the last whole vector: one by one
  });
}

template <typename T>
void batch_norm_inference_scale_shift(const T* weight, const T* bias, const T* running_mean,
                                      const T* running_var, double eps, int64_t channels, T* scale,
                                      T* shift) {
  std::vector<double> mean(static_cast<size_t>(channels)), invstd(mean.size());
  inference_statistics(running_mean, running_var, eps, channels, mean.data(), invstd.data());
  const ScaleShift folded = scale_shift_of(weight, bias, mean.data(), invstd.data(), channels);
  for (size_t c = 0; c < mean.size(); ++c) {  // in T, as the forward's pass converts them
    scale[c] = static_cast<T>(folded.scale[c]);
    shift[c] = static_cast<T>(folded.shift[c]);
  }
}

#define B3_INSTANTIATE_BATCH_NORM(T)                                                              \
  template void batch_norm_forward_training<T>(const T*, const T*, const T*, T*, T*, T*, double*, \
                                               double*, const ActivationLayout&, double, double,  \
                                               Activation);                                       \
  template void batch_norm_forward_inference<T>(const T*, const T*, const T*, const T*, const T*, \
                                                T*, double*, double*, const ActivationLayout&,    \
                                                double, Activation);                              \
  template void batch_norm_backward<T>(const T*, const T*, const T*, const T*, const double*,     \
                                       const double*, T*, T*, T*, const ActivationLayout&, bool,  \
                                       Activation);

B3_INSTANTIATE_BATCH_NORM(float)
B3_INSTANTIATE_BATCH_NORM(double)
template void batch_norm_inference_scale_shift<float>(const float*, const float*, const float*,
                                                      const float*, double, int64_t, float*,
                                                      float*);
template void batch_norm_inference_scale_shift<double>(const double*, const double*, const double*,
                                                       const double*, double, int64_t, double*,
                                                       double*);
template class NhwcNormalizedActivation<float>;
template class NhwcBatchNormInputGradient<float>;
template class NhwcBatchNormInputGradient<double>;
template class NhwcNormalizedActivation<double>;

#undef B3_INSTANTIATE_BATCH_NORM

}  // namespace b3::cpu
