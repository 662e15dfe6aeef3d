// The per-pixel arithmetic of the image transform (transforms.h), written once
// for the CPU loops and for a CUDA kernel: plain structs and inline functions,
// __host__ __device__ under nvcc. The host decides everything random (crop
// offsets, flips) per image in a CropFlip; these functions only apply it.
//
// Output pixel (c, y, x) of an image, for resized size Rh x Rw and crop Ch x Cw:
//   x' = flip ? Cw - 1 - x : x              (horizontal flip of the crop)
//   (ry, rx) = (y + top, x' + left)         (position in the resized image)
//   v = bilinear(image, ry, rx, c)          (torch.nn.functional.interpolate,
//                                            mode="bilinear", align_corners=False)
//   v = round_half_even(v) if round_resized (torchvision's resize of uint8 images,
//                                            and PIL, give uint8 pixels)
//   out = (v / 255 - mean[c]) / std[c]      (ToTensor, then Normalize if asked)
#pragma once

#include <cmath>
#include <cstdint>

#include "tensor/host_device.h"

namespace b3 {

// What one image gets: the crop's top-left corner in the resized image, and
// whether the crop is mirrored left-right.
struct CropFlip {
  int32_t top = 0;
  int32_t left = 0;
  int32_t flip = 0;  // 0 or 1
  bool operator==(const CropFlip&) const = default;
};

// What the whole batch shares.
struct TransformGeometry {
  int32_t in_height = 0, in_width = 0, channels = 0;  // the uint8 images
  int32_t resized_height = 0, resized_width = 0;      // after Resize
  int32_t out_height = 0, out_width = 0;              // after the crop
  bool round_resized = true;
};

// One output coordinate's two source pixels and their weights.
struct LinearSample {
  int32_t index0 = 0, index1 = 0;
  float lambda0 = 1, lambda1 = 0;
};

// PyTorch's CPU bilinear weights (compute_source_index_and_lambda in
// aten/src/ATen/native/UpSample.h, align_corners=False) for float tensors,
// with their exact precision (checked against torch 1.13's weights for many
// size pairs: equal to the bit):
//   scale = float(in) / out                               (float)
//   src = max(scale * (dst + 0.5) - 0.5, 0)               (double: ATen's 0.5 is a double)
//   index0 = int(src); index1 = index0 + 1, clamped to the last pixel;
//   lambda1 = float(src - index0); lambda0 = 1 - lambda1  (float)
// Equal sizes copy. (Computing src in float instead puts 1% of the pixels one
// level off when downscaling 32 -> 20, as values move across rounding ties.)
B3_HOST_DEVICE inline LinearSample linear_sample(int32_t dst, int32_t in_size, int32_t out_size) {
  LinearSample s;
  if (in_size == out_size) {
    s.index0 = s.index1 = dst;
    return s;
  }
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  double src = static_cast<double>(scale) * (static_cast<double>(dst) + 0.5) - 0.5;
  if (src < 0.0) src = 0.0;
  s.index0 = static_cast<int32_t>(src);
  s.index1 = s.index0 + (s.index0 < in_size - 1 ? 1 : 0);
  s.lambda1 = static_cast<float>(src - static_cast<double>(s.index0));
  s.lambda0 = 1.0f - s.lambda1;
  return s;
}

// Interpolation along x of one source row, then the blend of two such rows
// along y, in PyTorch's order of operations (so float results match).
B3_HOST_DEVICE inline float blend_row(float left, float right, const LinearSample& sx) {
  return left * sx.lambda0 + right * sx.lambda1;
}
B3_HOST_DEVICE inline float blend_rows(float top, float bottom, const LinearSample& sy) {
  return top * sy.lambda0 + bottom * sy.lambda1;
}

// Round to the nearest integer, ties to even (torch.round, rint), for
// 0 <= v < 2^22. On the host, adding and subtracting 1.5 * 2^23 rounds in the
// FPU's default mode (to nearest even) without a libm call, so it vectorizes
// (IEEE arithmetic: compilers do not fold (v + m) - m to v without -ffast-math,
// which b3 never uses).
B3_HOST_DEVICE inline float round_half_even(float v) {
#if defined(__CUDA_ARCH__)
  return rintf(v);
#else
  const float m = 12582912.0f;  // 1.5 * 2^23
  return (v + m) - m;
#endif
}

// A uint8 level (or an unrounded resized value) -> output value: scaling to
// [0, 1] as ToTensor (v / 255), then Normalize ((x - mean) / std; mean 0 and
// std 1 leave it alone).
B3_HOST_DEVICE inline float scale_value(float level, float mean, float std) {
  return (level / 255.0f - mean) / std;
}

// Resized value -> output value: optional rounding to a uint8 level, then scale_value.
B3_HOST_DEVICE inline float finish_value(float resized, bool round_resized, float mean, float std) {
  return scale_value(round_resized ? round_half_even(resized) : resized, mean, std);
}

// The column of the resized image that output column x reads.
B3_HOST_DEVICE inline int32_t resized_column(int32_t x, const CropFlip& p, int32_t out_width) {
  return (p.flip ? out_width - 1 - x : x) + p.left;
}

// The whole transform of one output value, for a kernel with one thread per
// output element. `image` is one HWC uint8 image.
B3_HOST_DEVICE inline float transform_value(const uint8_t* image, const TransformGeometry& g,
                                            const CropFlip& p, int32_t c, int32_t y, int32_t x,
                                            float mean, float std) {
  const LinearSample sy = linear_sample(y + p.top, g.in_height, g.resized_height);
  const LinearSample sx =
      linear_sample(resized_column(x, p, g.out_width), g.in_width, g.resized_width);
  auto at = [&](int32_t row, int32_t col) {
    return static_cast<float>(
        image[(static_cast<int64_t>(row) * g.in_width + col) * g.channels + c]);
  };
  const float top = blend_row(at(sy.index0, sx.index0), at(sy.index0, sx.index1), sx);
  const float bottom = blend_row(at(sy.index1, sx.index0), at(sy.index1, sx.index1), sx);
  return finish_value(blend_rows(top, bottom, sy), g.round_resized, mean, std);
}

}  // namespace b3
