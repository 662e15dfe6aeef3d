// DeviceBatches: the training loop's BatchSource when the model trains on a
// GPU. It takes uint8 batches from another BatchSource (RawLoaderBatches below:
// the DataLoader's batches as they are), and for each batch
//   1. draws the crops and flips on the host (draw_crop_flips, with the
//      generator LoaderBatchSource uses: same seed, same augmentation),
//   2. copies the crop/flip parameters, the labels and the image bytes into a
//      page-locked buffer (tensor/pinned_buffer.h),
//   3. queues their upload on the device's compute stream (asynchronous),
//   4. queues the transform kernel (data/transform_cuda.h): resize, crop, flip,
//      /255, normalize, into f16 or f32 [N, C, out, out] in the model's format,
// and returns {images, labels (i64)} on the device at once, without waiting
// for the GPU. The model's step is then queued behind the transform on the
// same stream.
//
// Double buffering: two pinned buffers take turns. Filling buffer k waits
// (host side) only for the upload queued from buffer k two batches earlier,
// so the host may prepare the next batch while the GPU still runs the current
// step, and never runs more than two batches ahead of the uploads. The upload
// is queued on the compute stream itself (not a separate copy stream), so it
// is ordered after the previous step without cross-stream synchronization;
// a 32x32 uint8 batch of 128 is 393 KB, a few microseconds over PCIe.
//
// The upsampling happens on the device, from the uint8 batch: 32x32x3 bytes go
// up instead of 224x224x3 floats (~50x less traffic), as DESIGN.md asks.
//
// This file compiles in every build (no CUDA header); in a CPU-only build the
// constructor throws, because options.device cannot be a usable CUDA device.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>

#include "data/batch_source.h"
#include "data/loader.h"
#include "data/transforms.h"
#include "tensor/pinned_buffer.h"
#include "tensor/random.h"

namespace b3 {

// The DataLoader's batches unchanged, as a BatchSource: images uint8
// [N, C, H, W] (NHWC bytes), labels i64 [N], both on the CPU.
class RawLoaderBatches : public BatchSource {
 public:
  RawLoaderBatches(std::shared_ptr<const Dataset> dataset, LoaderOptions options)
      : loader_(std::move(dataset), options) {}
  void start_epoch(int64_t epoch) override { loader_.start_epoch(epoch); }
  std::optional<LabeledBatch> next() override;
  int64_t batches_per_epoch() const override { return loader_.batches_per_epoch(); }
  const DataLoader& loader() const { return loader_; }

 private:
  DataLoader loader_;
};

class DeviceBatches : public BatchSource {
 public:
  // `source` yields uint8 images [N, C, H, W] (any layout) and i64 labels [N]
  // on the CPU. `transform`: the CPU pipeline's options with device a CUDA
  // device and dtype f32 or f16 (format NCHW or NHWC). `augment_seed` as in
  // LoaderBatchSource: with equal seeds both draw the same crops and flips.
  // Throws std::invalid_argument for a null source, a CPU device or another
  // dtype, and (CPU-only build, no GPU) the error of require_device_available.
  DeviceBatches(std::unique_ptr<BatchSource> source, TransformOptions transform,
                uint64_t augment_seed = 0);
  ~DeviceBatches() override = default;  // the pinned buffers wait for their uploads
  DeviceBatches(const DeviceBatches&) = delete;
  DeviceBatches& operator=(const DeviceBatches&) = delete;

  void start_epoch(int64_t epoch) override;
  // The next batch on transform().device, or nothing at the end of the epoch.
  // Throws std::invalid_argument when the source's batch is not uint8 images
  // with i64 labels, or the transform does not fit the images.
  std::optional<LabeledBatch> next() override;
  int64_t batches_per_epoch() const override { return source_->batches_per_epoch(); }

  const TransformOptions& transform() const { return transform_; }
  const BatchSource& source() const { return *source_; }

 private:
  std::unique_ptr<BatchSource> source_;
  TransformOptions transform_;
  uint64_t augment_seed_;
  Generator augment_;
  std::array<cuda::PinnedBuffer, 2> staging_;  // taking turns, see above
  size_t next_staging_ = 0;
};

}  // namespace b3
