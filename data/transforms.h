// The image transform between the loader's uint8 batches and the model: the
// reference's torchvision pipeline
//
//   Resize((R, R))            bilinear, as torchvision on these images
//   RandomCrop(C) / CenterCrop(C)    training / evaluation
//   RandomHorizontalFlip(0.5) optional (training)
//   ToTensor()                scale to [0, 1]
//   Normalize(mean, std)      optional
//
// as one pass from uint8 [N, C, H, W] (NHWC bytes) to a float tensor
// [N, C, out, out] in the dtype, memory format and device the model wants.
// Resize = 0 or crop = 0 mean "none" (CPU-sized runs stay at 32x32).
//
// Randomness is drawn on the host, per image, into a CropFlip (offsets and
// flip); apply_transform then does no random draws, so a CUDA kernel can apply
// the same CropFlips with transform_kernel.h and give the same result.
//
// Exactness: the resize is torch's bilinear interpolation (align_corners=False)
// with ATen's float weights, rounded to uint8 like torchvision's resize of a
// uint8 tensor. Against torchvision 0.14 (tests/test_data_torchvision.cpp) it
// equals the uint8-tensor path value for value, and PIL's path (which rounds
// in two fixed-point passes, as the reference's CIFAR10 dataset of PIL images
// does) within one grey level. Downscaling is the same plain bilinear formula,
// i.e. torch's antialias=False, not PIL's antialiased shrinking.
#pragma once

#include <cstdint>
#include <vector>

#include "data/transform_kernel.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace b3 {

struct TransformOptions {
  int64_t resize = 0;            // R: resize to R x R first; 0 keeps the input size
  int64_t crop = 0;              // C: crop C x C; 0 keeps the (resized) size
  bool random_crop = false;      // true: RandomCrop (training); false: CenterCrop
  bool horizontal_flip = false;  // RandomHorizontalFlip(p=0.5)
  // Round the resized image to uint8 levels as torchvision does on uint8
  // tensors and PIL images (no effect when there is no resize).
  bool round_resized = true;
  std::vector<double> mean;  // per channel; empty: no normalization
  std::vector<double> std;   // per channel; empty: no normalization
  DType dtype = DType::f32;  // f32, f64 or f16
  MemoryFormat format = MemoryFormat::contiguous;
  Device device = Device::cpu();

  // The reference benchmark: Resize 256, RandomCrop 224 / CenterCrop 224, [0, 1].
  static TransformOptions reference_train();
  static TransformOptions reference_eval();
};

// Checks the options against the input image size and returns the sizes;
// throws std::invalid_argument naming the option.
TransformGeometry transform_geometry(const TransformOptions& options, int64_t in_height,
                                     int64_t in_width, int64_t channels);

// The per-image crop offsets and flips, drawn on the host in image order:
// RandomCrop draws top = gen.below(Rh - C + 1) then left = gen.below(Rw - C + 1)
// (no draw when the crop is the full size); a flip draws gen.uniform() < 0.5.
// CenterCrop: top = round_half_even((Rh - C) / 2), as torchvision's center_crop.
std::vector<CropFlip> draw_crop_flips(const TransformOptions& options,
                                      const TransformGeometry& geometry, int64_t count,
                                      Generator& gen);

// Applies `params` (one per image) to uint8 `images` [N, C, H, W] (a CPU
// tensor, any layout; loader batches are already NHWC). Returns
// [N, C, out, out] of options.dtype in options.format on options.device
// (computed on the CPU, then copied).
Tensor apply_transform(const Tensor& images, const std::vector<CropFlip>& params,
                       const TransformOptions& options);

// The same, written into `out`, a CPU tensor of the output shape and dtype,
// dense in options.format (options.device is not used). Reusing one output
// buffer saves the page faults of a fresh 77 MB allocation per batch of 128
// at 224x224 (see `b3 bench-data`).
void apply_transform_into(const Tensor& images, const std::vector<CropFlip>& params,
                          const TransformOptions& options, Tensor& out);

// draw_crop_flips + apply_transform.
Tensor transform_images(const Tensor& images, const TransformOptions& options, Generator& gen);

}  // namespace b3
