// The CPU image transform: per image, the rows of the source image that the
// crop needs are first interpolated along x (one float row per source row),
// then each output row blends two of them along y. The arithmetic is
// transform_kernel.h's, in the same order, so a CUDA kernel that calls
// transform_value() gives the same floats.
#include "data/transforms.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "tensor/ops.h"

namespace b3 {

namespace {

std::string size_str(int64_t h, int64_t w) { return std::to_string(h) + "x" + std::to_string(w); }

int32_t to_int32(int64_t value, const char* what) {
  if (value < 0 || value > std::numeric_limits<int32_t>::max() / 4) {
    throw std::invalid_argument(std::string("transform: ") + what + " " + std::to_string(value) +
                                " is out of range");
  }
  return static_cast<int32_t>(value);
}

template <typename T>
void transform_cpu(const uint8_t* images, const TransformGeometry& g,
                   const std::vector<CropFlip>& params, const std::vector<float>& mean,
                   const std::vector<float>& std, Tensor& out) {
  const int64_t n = static_cast<int64_t>(params.size());
  const int32_t C = g.channels;
  const int32_t W = g.out_width;
  const int64_t image_bytes = static_cast<int64_t>(g.in_height) * g.in_width * C;
  std::vector<LinearSample> rows(static_cast<size_t>(g.resized_height));
  std::vector<LinearSample> cols(static_cast<size_t>(g.resized_width));
  for (int32_t r = 0; r < g.resized_height; ++r)
    rows[r] = linear_sample(r, g.in_height, g.resized_height);
  for (int32_t r = 0; r < g.resized_width; ++r)
    cols[r] = linear_sample(r, g.in_width, g.resized_width);
  T* out_data = out.data<T>();
  const int64_t sn = out.stride(0), sc = out.stride(1), sh = out.stride(2), sw = out.stride(3);
  // NCHW output: source rows are kept as channel planes [row][c][x], so that
  // each output row of a channel is two contiguous rows blended; NHWC:
  // [row][x][c], so that an output row of pixels is one contiguous span.
  const bool planar = out.is_contiguous(MemoryFormat::contiguous);
  const int64_t row_floats = static_cast<int64_t>(W) * C;
  const int64_t x_step = planar ? 1 : C;  // between neighbouring x in a source row
  const int64_t c_step = planar ? W : 1;  // between channels in a source row
  if (!(planar ? (sw == 1 || W == 1) : (sc == 1 && (sw == C || W == 1)))) {
    throw std::logic_error("transform: output " + out.str() + " is not dense NCHW or NHWC");
  }
  // mean and std of each position of a source row, so the loops below are
  // straight spans the compiler vectorizes.
  std::vector<float> row_mean(static_cast<size_t>(row_floats));
  std::vector<float> row_std(static_cast<size_t>(row_floats));
  for (int32_t x = 0; x < W; ++x) {
    for (int32_t c = 0; c < C; ++c) {
      row_mean[x * x_step + c * c_step] = mean[c];
      row_std[x * x_step + c * c_step] = std[c];
    }
  }
  // One output span: blend two source spans along y, round, scale.
  auto finish_span = [&](const float* top, const float* bottom, const LinearSample& sy,
                         const float* span_mean, const float* span_std, T* dst, int64_t count) {
    if (g.round_resized) {
      for (int64_t k = 0; k < count; ++k) {
        const float level = round_half_even(blend_rows(top[k], bottom[k], sy));
        dst[k] = T(scale_value(level, span_mean[k], span_std[k]));
      }
    } else {
      for (int64_t k = 0; k < count; ++k) {
        dst[k] = T(scale_value(blend_rows(top[k], bottom[k], sy), span_mean[k], span_std[k]));
      }
    }
  };

  // Threads pay off for full-size outputs; a batch of 32x32 images is done
  // before a thread team would have started.
  const int64_t work = n * row_floats * g.out_height;
#pragma omp parallel if (work > (int64_t{1} << 21))
  {
    std::vector<float> source_rows;  // the crop's columns of the source rows it needs
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const CropFlip& p = params[static_cast<size_t>(i)];
      const uint8_t* image = images + i * image_bytes;
      const int32_t first_row = rows[p.top].index0;
      const int32_t last_row = rows[p.top + g.out_height - 1].index1;
      source_rows.resize(static_cast<size_t>((last_row - first_row + 1) * row_floats));
      // 1. Along x: each needed source row, at the crop's (flipped) columns.
      for (int32_t r = first_row; r <= last_row; ++r) {
        const uint8_t* src = image + static_cast<int64_t>(r) * g.in_width * C;
        float* dst = source_rows.data() + (r - first_row) * row_floats;
        for (int32_t x = 0; x < W; ++x) {
          const LinearSample& sx = cols[resized_column(x, p, W)];
          const uint8_t* left = src + static_cast<int64_t>(sx.index0) * C;
          const uint8_t* right = src + static_cast<int64_t>(sx.index1) * C;
          for (int32_t c = 0; c < C; ++c) {
            dst[x * x_step + c * c_step] =
                blend_row(static_cast<float>(left[c]), static_cast<float>(right[c]), sx);
          }
        }
      }
      // 2. Along y: each output row blends two source rows, then rounds and scales.
      T* out_image = out_data + i * sn;
      for (int32_t y = 0; y < g.out_height; ++y) {
        const LinearSample& sy = rows[y + p.top];
        const float* top = source_rows.data() + (sy.index0 - first_row) * row_floats;
        const float* bottom = source_rows.data() + (sy.index1 - first_row) * row_floats;
        if (planar) {  // one span of W per channel plane
          for (int32_t c = 0; c < C; ++c) {
            const int64_t at = c * c_step;
            finish_span(top + at, bottom + at, sy, row_mean.data() + at, row_std.data() + at,
                        out_image + c * sc + y * sh, W);
          }
        } else {  // NHWC: the whole row of pixels is one span
          finish_span(top, bottom, sy, row_mean.data(), row_std.data(), out_image + y * sh,
                      row_floats);
        }
      }
    }
  }
}

}  // namespace

TransformOptions TransformOptions::reference_train() {
  TransformOptions options;
  options.resize = 256;
  options.crop = 224;
  options.random_crop = true;
  return options;
}

TransformOptions TransformOptions::reference_eval() {
  TransformOptions options;
  options.resize = 256;
  options.crop = 224;
  options.random_crop = false;
  return options;
}

TransformGeometry transform_geometry(const TransformOptions& options, int64_t in_height,
                                     int64_t in_width, int64_t channels) {
  if (in_height < 1 || in_width < 1 || channels < 1) {
    throw std::invalid_argument("transform: images of " + size_str(in_height, in_width) + "x" +
                                std::to_string(channels) + " are empty");
  }
  if (options.resize < 0) {
    throw std::invalid_argument("transform: resize must be >= 0 (0 = no resize), got " +
                                std::to_string(options.resize));
  }
  if (options.crop < 0) {
    throw std::invalid_argument("transform: crop must be >= 0 (0 = no crop), got " +
                                std::to_string(options.crop));
  }
  TransformGeometry g;
  g.in_height = to_int32(in_height, "image height");
  g.in_width = to_int32(in_width, "image width");
  g.channels = to_int32(channels, "channel count");
  g.resized_height = options.resize > 0 ? to_int32(options.resize, "resize") : g.in_height;
  g.resized_width = options.resize > 0 ? to_int32(options.resize, "resize") : g.in_width;
  if (options.crop > g.resized_height || options.crop > g.resized_width) {
    throw std::invalid_argument(
        "transform: crop " + std::to_string(options.crop) + " is larger than the " +
        (options.resize > 0 ? "resized" : "input") + " image " +
        size_str(g.resized_height, g.resized_width) + " (set resize >= crop)");
  }
  g.out_height = options.crop > 0 ? static_cast<int32_t>(options.crop) : g.resized_height;
  g.out_width = options.crop > 0 ? static_cast<int32_t>(options.crop) : g.resized_width;
  g.round_resized = options.round_resized;
  if (options.mean.size() != options.std.size() ||
      (!options.mean.empty() && static_cast<int64_t>(options.mean.size()) != channels)) {
    throw std::invalid_argument("transform: mean and std need one value per channel (" +
                                std::to_string(channels) + "), got " +
                                std::to_string(options.mean.size()) + " and " +
                                std::to_string(options.std.size()));
  }
  for (double s : options.std) {
    if (!(s != 0.0) || !std::isfinite(s)) {
      throw std::invalid_argument("transform: std values must be finite and nonzero, got " +
                                  std::to_string(s));
    }
  }
  if (options.dtype != DType::f32 && options.dtype != DType::f64 && options.dtype != DType::f16) {
    throw std::invalid_argument(std::string("transform: output dtype ") +
                                dtype_name(options.dtype) + " is not f32, f64 or f16");
  }
  return g;
}

std::vector<CropFlip> draw_crop_flips(const TransformOptions& options, const TransformGeometry& g,
                                      int64_t count, Generator& gen) {
  std::vector<CropFlip> params(static_cast<size_t>(count));
  const int32_t spare_h = g.resized_height - g.out_height;
  const int32_t spare_w = g.resized_width - g.out_width;
  for (CropFlip& p : params) {
    if (options.random_crop) {
      // torchvision RandomCrop.get_params: no draw when the crop is the whole image.
      if (spare_h != 0 || spare_w != 0) {
        p.top = static_cast<int32_t>(gen.below(static_cast<uint64_t>(spare_h) + 1));
        p.left = static_cast<int32_t>(gen.below(static_cast<uint64_t>(spare_w) + 1));
      }
    } else {
      // torchvision center_crop: int(round((size - crop) / 2.0)), round half to even.
      p.top = static_cast<int32_t>(std::nearbyint(spare_h / 2.0));
      p.left = static_cast<int32_t>(std::nearbyint(spare_w / 2.0));
    }
    if (options.horizontal_flip) p.flip = gen.uniform() < 0.5 ? 1 : 0;
  }
  return params;
}

namespace {

// Checks images and params; returns the geometry.
TransformGeometry check_transform_inputs(const Tensor& images, const std::vector<CropFlip>& params,
                                         const TransformOptions& options) {
  if (!images.defined()) throw std::invalid_argument("transform: images tensor is undefined");
  require_cpu("transform", {images});
  if (images.dtype() != DType::u8 || images.dim() != 4) {
    throw std::invalid_argument("transform: expected uint8 images [N, C, H, W], got " +
                                images.str());
  }
  const int64_t n = images.size(0);
  const TransformGeometry g =
      transform_geometry(options, images.size(2), images.size(3), images.size(1));
  if (static_cast<int64_t>(params.size()) != n) {
    throw std::invalid_argument("transform: " + std::to_string(params.size()) +
                                " crop/flip parameters for a batch of " + std::to_string(n));
  }
  for (size_t i = 0; i < params.size(); ++i) {
    const CropFlip& p = params[i];
    if (p.top < 0 || p.top > g.resized_height - g.out_height || p.left < 0 ||
        p.left > g.resized_width - g.out_width || (p.flip != 0 && p.flip != 1)) {
      throw std::invalid_argument("transform: image " + std::to_string(i) + " has crop offset (" +
                                  std::to_string(p.top) + ", " + std::to_string(p.left) +
                                  ") flip " + std::to_string(p.flip) + ", outside a " +
                                  size_str(g.out_height, g.out_width) + " crop of " +
                                  size_str(g.resized_height, g.resized_width));
    }
  }
  return g;
}

}  // namespace

void apply_transform_into(const Tensor& images, const std::vector<CropFlip>& params,
                          const TransformOptions& options, Tensor& out) {
  const TransformGeometry g = check_transform_inputs(images, params, options);
  const int64_t n = images.size(0);
  const Shape shape{n, g.channels, g.out_height, g.out_width};
  if (!out.defined() || !out.device().is_cpu() || out.shape() != shape ||
      out.dtype() != options.dtype || !out.is_contiguous(options.format)) {
    throw std::invalid_argument("transform: the output must be a CPU tensor " + shape_str(shape) +
                                " " + dtype_name(options.dtype) + " " +
                                memory_format_name(options.format) + ", got " +
                                (out.defined() ? out.str() : std::string("undefined")));
  }
  std::vector<float> mean(static_cast<size_t>(g.channels), 0.0f);
  std::vector<float> std_dev(static_cast<size_t>(g.channels), 1.0f);
  for (size_t c = 0; c < options.mean.size(); ++c) {
    mean[c] = static_cast<float>(options.mean[c]);
    std_dev[c] = static_cast<float>(options.std[c]);
  }
  if (n == 0) return;
  const Tensor nhwc = images.contiguous(MemoryFormat::channels_last);
  const uint8_t* pixels = nhwc.data<uint8_t>();
  switch (options.dtype) {
    case DType::f32: transform_cpu<float>(pixels, g, params, mean, std_dev, out); break;
    case DType::f64: transform_cpu<double>(pixels, g, params, mean, std_dev, out); break;
    case DType::f16: transform_cpu<Half>(pixels, g, params, mean, std_dev, out); break;
    default: throw std::logic_error("transform: unreachable dtype");
  }
}

Tensor apply_transform(const Tensor& images, const std::vector<CropFlip>& params,
                       const TransformOptions& options) {
  const TransformGeometry g = check_transform_inputs(images, params, options);
  Tensor out = empty({images.size(0), g.channels, g.out_height, g.out_width},
                     TensorOptions(options.dtype).with_format(options.format));
  apply_transform_into(images, params, options, out);
  return options.device.is_cpu() ? out : out.to(options.device);
}

Tensor transform_images(const Tensor& images, const TransformOptions& options, Generator& gen) {
  if (!images.defined() || images.dim() != 4) {
    throw std::invalid_argument("transform: expected uint8 images [N, C, H, W], got " +
                                (images.defined() ? images.str() : std::string("undefined")));
  }
  const TransformGeometry g =
      transform_geometry(options, images.size(2), images.size(3), images.size(1));
  return apply_transform(images, draw_crop_flips(options, g, images.size(0), gen), options);
}

}  // namespace b3
