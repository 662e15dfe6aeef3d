// The image transform of data/transforms.h on a CUDA device: uint8 images
// [N, C, H, W] (the loader's NHWC bytes) already in device memory ->
// resize (bilinear), crop, flip, /255, normalize -> f16 or f32 [N, C, out, out]
// in NCHW or NHWC, one kernel, no host synchronization.
//
// The randomness stays on the host: the per-image CropFlips are drawn by
// draw_crop_flips (data/transforms.h) with the same Generator the CPU pipeline
// uses, copied to the device, and applied here. The per-pixel arithmetic is
// data/transform_kernel.h's (linear_sample, blend_row, blend_rows,
// finish_value), the same functions and order as the CPU loops, so the two
// agree value for value wherever the products are exact (the reference
// 32 -> 256 resize, and no resize); in general they may differ by float
// rounding, see tests/test_cuda_transform.cpp for the bound.
//
// Declared for every build (no CUDA header); defined in data/transform_cuda.cu
// in CUDA builds, stubs that throw "built without CUDA" otherwise.
#pragma once

#include <cstdint>
#include <vector>

#include "data/transform_kernel.h"
#include "data/transforms.h"
#include "tensor/cuda_stream.h"
#include "tensor/half.h"
#include "tensor/tensor.h"

namespace b3::cuda {

// The most channels Normalize may have on the device (the means and stds are
// passed by value to the kernel).
inline constexpr int kMaxTransformChannels = 16;

// Raw launchers. `images`: device memory, n images of geometry.in_height x
// in_width x channels uint8 (HWC), back to back. `params`: device memory, n
// CropFlips inside the geometry (as draw_crop_flips gives them; they are not
// checked here). `mean`, `std`: host values, one per channel, or both empty
// (no normalization). `out`: device memory of n * channels * out_height *
// out_width elements, written dense in `format` (NCHW or NHWC). f32 outputs
// are the CPU's f32 values; f16 outputs are those values rounded once to
// nearest even. n == 0 launches nothing. Throws std::invalid_argument for
// null pointers, a negative n, bad mean/std sizes or a geometry the kernel
// cannot index.
B3_CUDA_LAUNCHER(void transform_batch(const uint8_t* images, const CropFlip* params, int64_t n,
                                      const TransformGeometry& geometry,
                                      const std::vector<float>& mean, const std::vector<float>& std,
                                      float* out, MemoryFormat format, const Stream& stream));
B3_CUDA_LAUNCHER(void transform_batch(const uint8_t* images, const CropFlip* params, int64_t n,
                                      const TransformGeometry& geometry,
                                      const std::vector<float>& mean, const std::vector<float>& std,
                                      Half* out, MemoryFormat format, const Stream& stream));

// The Tensor-level call: `images` u8 [N, C, H, W] dense channels_last on a
// CUDA device; `params` N CropFlips in device memory of that device (drawn by
// draw_crop_flips for this geometry); `out` a tensor on the same device of
// shape [N, C, out, out] (transform_geometry(options, H, W, C)), dtype
// options.dtype (f32 or f16), dense in options.format. options.device is not
// used. Queued on the compute stream of the images' device; returns at once.
// Throws std::invalid_argument naming what does not match.
B3_CUDA_LAUNCHER(void apply_transform_cuda(const Tensor& images, const CropFlip* params,
                                           const TransformOptions& options, Tensor& out));

}  // namespace b3::cuda
