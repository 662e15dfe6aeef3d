// The device image transform (data/transform_cuda.h): one thread per output
// pixel (image, y, x) in a grid-stride loop. Each thread finds its two source
// rows and columns once (linear_sample, in double as ATen does) and then, for
// each channel, blends the four uint8 neighbours along x, then along y, rounds
// to a uint8 level if asked and scales: transform_kernel.h's functions, in the
// CPU loops' order (data/transforms.cpp), so both compute the same formula.
// An NHWC thread writes its pixel's channels side by side; neighbouring
// threads write neighbouring pixels, so stores are coalesced in both layouts.
#include <cuda_fp16.h>

#include <limits>
#include <stdexcept>
#include <string>

#include "data/transform_cuda.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cuda_kernels.cuh"

namespace b3::cuda {

namespace {

using detail::device_pointer;
using detail::from_float;

// Normalize's per-channel values, passed by value to the kernel.
struct Normalization {
  int32_t enabled = 0;  // 0: mean 0 and std 1 for every channel (ToTensor only)
  float mean[kMaxTransformChannels] = {};
  float std[kMaxTransformChannels] = {};
};

template <typename T>
__global__ void transform_kernel(const uint8_t* __restrict__ images,
                                 const CropFlip* __restrict__ params, int64_t pixels,
                                 TransformGeometry g, Normalization norm, T* __restrict__ out,
                                 bool channels_last) {
  const int32_t C = g.channels;
  const int64_t image_bytes = static_cast<int64_t>(g.in_height) * g.in_width * C;
  const int64_t row_bytes = static_cast<int64_t>(g.in_width) * C;
  const int64_t plane = static_cast<int64_t>(g.out_height) * g.out_width;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < pixels;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t n = i / plane;
    const int64_t yx = i - n * plane;
    const int32_t y = static_cast<int32_t>(yx / g.out_width);
    const int32_t x = static_cast<int32_t>(yx - int64_t{y} * g.out_width);
    const CropFlip p = params[n];
    // As transform_value(): the resized pixel (y + top, flipped x + left) and
    // its bilinear source samples.
    const LinearSample sy = linear_sample(y + p.top, g.in_height, g.resized_height);
    const LinearSample sx =
        linear_sample(resized_column(x, p, g.out_width), g.in_width, g.resized_width);
    const uint8_t* image = images + n * image_bytes;
    const uint8_t* row0 = image + sy.index0 * row_bytes;
    const uint8_t* row1 = image + sy.index1 * row_bytes;
    const int64_t col0 = static_cast<int64_t>(sx.index0) * C;
    const int64_t col1 = static_cast<int64_t>(sx.index1) * C;
    for (int32_t c = 0; c < C; ++c) {
      const float top =
          blend_row(static_cast<float>(row0[col0 + c]), static_cast<float>(row0[col1 + c]), sx);
      const float bottom =
          blend_row(static_cast<float>(row1[col0 + c]), static_cast<float>(row1[col1 + c]), sx);
      const float mean = norm.enabled ? norm.mean[c] : 0.0f;
      const float std = norm.enabled ? norm.std[c] : 1.0f;
      const float value = finish_value(blend_rows(top, bottom, sy), g.round_resized, mean, std);
      const int64_t at = channels_last ? i * C + c : (n * C + c) * plane + yx;
      out[at] = from_float<T>(value);
    }
  }
}

void check_geometry(const TransformGeometry& g) {
  const bool positive = g.in_height > 0 && g.in_width > 0 && g.channels > 0 &&
                        g.resized_height > 0 && g.resized_width > 0 && g.out_height > 0 &&
                        g.out_width > 0;
  if (!positive || g.out_height > g.resized_height || g.out_width > g.resized_width) {
    throw std::invalid_argument(
        "cuda::transform_batch: bad geometry: input " + std::to_string(g.in_height) + "x" +
        std::to_string(g.in_width) + "x" + std::to_string(g.channels) + ", resized " +
        std::to_string(g.resized_height) + "x" + std::to_string(g.resized_width) + ", crop " +
        std::to_string(g.out_height) + "x" + std::to_string(g.out_width) +
        " (use transform_geometry() from data/transforms.h)");
  }
}

Normalization make_normalization(const std::vector<float>& mean, const std::vector<float>& std,
                                 int32_t channels) {
  Normalization norm;
  if (mean.empty() && std.empty()) return norm;
  if (mean.size() != std.size() || static_cast<int64_t>(mean.size()) != channels) {
    throw std::invalid_argument("cuda::transform_batch: mean and std need one value per channel (" +
                                std::to_string(channels) + "), got " + std::to_string(mean.size()) +
                                " and " + std::to_string(std.size()));
  }
  if (channels > kMaxTransformChannels) {
    throw std::invalid_argument("cuda::transform_batch: Normalize on the device takes at most " +
                                std::to_string(kMaxTransformChannels) + " channels, got " +
                                std::to_string(channels));
  }
  norm.enabled = 1;
  for (int32_t c = 0; c < channels; ++c) {
    norm.mean[c] = mean[static_cast<size_t>(c)];
    norm.std[c] = std[static_cast<size_t>(c)];
  }
  return norm;
}

template <typename T>
void launch_transform(const uint8_t* images, const CropFlip* params, int64_t n,
                      const TransformGeometry& g, const std::vector<float>& mean,
                      const std::vector<float>& std, T* out, MemoryFormat format,
                      const Stream& stream) {
  detail::check_nonnegative(n, "cuda::transform_batch", "n");
  check_geometry(g);
  const Normalization norm = make_normalization(mean, std, g.channels);
  if (n == 0) return;
  const int64_t pixels = n * g.out_height * g.out_width;
  if (pixels > std::numeric_limits<int64_t>::max() / g.channels) {
    throw std::invalid_argument("cuda::transform_batch: the output of " + std::to_string(n) +
                                " images does not fit in int64 indices");
  }
  detail::check_pointer(images, n, "cuda::transform_batch", "images");
  detail::check_pointer(params, n, "cuda::transform_batch", "params");
  detail::check_pointer(out, n, "cuda::transform_batch", "out");
  DeviceGuard guard(stream.device);
  transform_kernel<<<detail::blocks_for(pixels), detail::kThreadsPerBlock, 0, stream.handle>>>(
      images, params, pixels, g, norm, device_pointer(out), format == MemoryFormat::channels_last);
  B3_CUDA_CHECK_LAUNCH("transform_kernel");
}

}  // namespace

void transform_batch(const uint8_t* images, const CropFlip* params, int64_t n,
                     const TransformGeometry& geometry, const std::vector<float>& mean,
                     const std::vector<float>& std, float* out, MemoryFormat format,
                     const Stream& stream) {
  launch_transform(images, params, n, geometry, mean, std, out, format, stream);
}

void transform_batch(const uint8_t* images, const CropFlip* params, int64_t n,
                     const TransformGeometry& geometry, const std::vector<float>& mean,
                     const std::vector<float>& std, Half* out, MemoryFormat format,
                     const Stream& stream) {
  launch_transform(images, params, n, geometry, mean, std, out, format, stream);
}

void apply_transform_cuda(const Tensor& images, const CropFlip* params,
                          const TransformOptions& options, Tensor& out) {
  if (!images.defined() || !images.device().is_cuda() || images.dtype() != DType::u8 ||
      images.dim() != 4 || !images.is_contiguous(MemoryFormat::channels_last)) {
    throw std::invalid_argument(
        "apply_transform_cuda: expected uint8 images [N, C, H, W] dense channels_last on a CUDA "
        "device, got " +
        (images.defined() ? images.str() : std::string("undefined")));
  }
  const TransformGeometry g =
      transform_geometry(options, images.size(2), images.size(3), images.size(1));
  const int64_t n = images.size(0);
  const Shape shape{n, g.channels, g.out_height, g.out_width};
  if (options.dtype != DType::f32 && options.dtype != DType::f16) {
    throw std::invalid_argument(std::string("apply_transform_cuda: output dtype ") +
                                dtype_name(options.dtype) + " is not f32 or f16");
  }
  if (!out.defined() || out.device() != images.device() || out.shape() != shape ||
      out.dtype() != options.dtype || !out.is_contiguous(options.format)) {
    throw std::invalid_argument(
        "apply_transform_cuda: the output must be " + shape_str(shape) + " " +
        dtype_name(options.dtype) + " " + memory_format_name(options.format) + " on " +
        images.device().str() + ", got " + (out.defined() ? out.str() : std::string("undefined")));
  }
  std::vector<float> mean(options.mean.begin(), options.mean.end());
  std::vector<float> std_dev(options.std.begin(), options.std.end());
  const Stream stream = compute_stream(images.device().index);
  const uint8_t* pixels = static_cast<const uint8_t*>(images.data_ptr());
  if (options.dtype == DType::f32) {
    transform_batch(pixels, params, n, g, mean, std_dev, static_cast<float*>(out.data_ptr()),
                    options.format, stream);
  } else {
    transform_batch(pixels, params, n, g, mean, std_dev, static_cast<Half*>(out.data_ptr()),
                    options.format, stream);
  }
}

}  // namespace b3::cuda
