// DeviceBatches: uint8 batches -> pinned staging buffer -> asynchronous upload
// -> the device transform (see data/device_batches.h). No CUDA header here:
// every CUDA call goes through the launchers of tensor/pinned_buffer.h and
// data/transform_cuda.h, so this file compiles in CPU-only builds too.
#include "data/device_batches.h"

#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "data/transform_cuda.h"
#include "tensor/device.h"

namespace b3 {

namespace {

// Byte offsets of one batch in a staging buffer: the CropFlips, the labels and
// the image bytes, each starting on a 256-byte boundary (cudaMalloc's
// alignment, so each piece is one aligned DMA).
struct StagingLayout {
  size_t params_offset = 0, params_bytes = 0;
  size_t labels_offset = 0, labels_bytes = 0;
  size_t images_offset = 0, images_bytes = 0;
  size_t total = 0;
};

constexpr size_t kStagingAlignment = 256;
static_assert(std::is_trivially_copyable_v<CropFlip>, "CropFlips are copied as bytes");

size_t align_up(size_t bytes) {
  return (bytes + kStagingAlignment - 1) / kStagingAlignment * kStagingAlignment;
}

StagingLayout staging_layout(int64_t n, size_t image_bytes) {
  StagingLayout layout;
  layout.params_bytes = static_cast<size_t>(n) * sizeof(CropFlip);
  layout.labels_offset = align_up(layout.params_bytes);
  layout.labels_bytes = static_cast<size_t>(n) * sizeof(int64_t);
  layout.images_offset = align_up(layout.labels_offset + layout.labels_bytes);
  layout.images_bytes = image_bytes;
  layout.total = layout.images_offset + layout.images_bytes;
  return layout;
}

}  // namespace

std::optional<LabeledBatch> RawLoaderBatches::next() {
  std::optional<Batch> batch = loader_.next();
  if (!batch) return std::nullopt;
  return LabeledBatch{std::move(batch->images), std::move(batch->labels)};
}

DeviceBatches::DeviceBatches(std::unique_ptr<BatchSource> source, TransformOptions transform,
                             uint64_t augment_seed)
    : source_(std::move(source)), transform_(std::move(transform)), augment_seed_(augment_seed) {
  if (source_ == nullptr) throw std::invalid_argument("DeviceBatches: the source is null");
  if (!transform_.device.is_cuda()) {
    throw std::invalid_argument("DeviceBatches: the transform's device is " +
                                transform_.device.str() +
                                "; DeviceBatches transforms on a CUDA device (use "
                                "LoaderBatchSource for the CPU)");
  }
  if (transform_.dtype != DType::f32 && transform_.dtype != DType::f16) {
    throw std::invalid_argument(std::string("DeviceBatches: output dtype ") +
                                dtype_name(transform_.dtype) + " is not f32 or f16");
  }
  require_device_available(transform_.device, "DeviceBatches");
}

void DeviceBatches::start_epoch(int64_t epoch) {
  // LoaderBatchSource::start_epoch's seed (data/loader_source.cpp), so that the
  // same augment_seed draws the same crops and flips on both paths; keep the
  // two equal (tests/test_cuda_transform.cpp compares the pipelines).
  augment_.reseed(DataLoader::augment_epoch_seed(augment_seed_, epoch));
  source_->start_epoch(epoch);
}

std::optional<LabeledBatch> DeviceBatches::next() {
  std::optional<LabeledBatch> batch = source_->next();
  if (!batch) return std::nullopt;
  const Tensor& images = batch->images;
  if (!images.defined() || !images.device().is_cpu() || images.dtype() != DType::u8 ||
      images.dim() != 4) {
    throw std::invalid_argument(
        "DeviceBatches: the source must give uint8 images [N, C, H, W] on the CPU, got " +
        (images.defined() ? images.str() : std::string("undefined")));
  }
  const int64_t n = images.size(0);
  const Tensor& labels = batch->labels;
  if (!labels.defined() || !labels.device().is_cpu() || labels.dtype() != DType::i64 ||
      labels.shape() != Shape{n}) {
    throw std::invalid_argument("DeviceBatches: the source must give i64 labels [" +
                                std::to_string(n) + "] on the CPU, got " +
                                (labels.defined() ? labels.str() : std::string("undefined")));
  }
  const TransformGeometry g =
      transform_geometry(transform_, images.size(2), images.size(3), images.size(1));
  // Drawn before anything can fail on the device, in image order, as the CPU path does.
  const std::vector<CropFlip> params = draw_crop_flips(transform_, g, n, augment_);

  const Device device = transform_.device;
  Tensor out =
      empty({n, g.channels, g.out_height, g.out_width},
            TensorOptions(transform_.dtype).with_device(device).with_format(transform_.format));
  Tensor device_labels = empty({n}, TensorOptions(DType::i64).with_device(device));
  if (n == 0) return LabeledBatch{out, device_labels};

  const Tensor nhwc = images.contiguous(MemoryFormat::channels_last);
  const Tensor dense_labels = labels.contiguous();
  const StagingLayout layout = staging_layout(n, nhwc.nbytes());

  // Take the buffer whose last upload was two batches ago; wait until the GPU
  // has read it (usually long done), then refill it.
  cuda::PinnedBuffer& staging = staging_[next_staging_];
  next_staging_ = 1 - next_staging_;
  staging.wait_until_reusable();
  if (staging.size() < layout.total) {
    staging = cuda::PinnedBuffer();  // free the old one first (it waits for its upload)
    staging = cuda::PinnedBuffer(layout.total, device.index);
  }
  std::memcpy(staging.bytes() + layout.params_offset, params.data(), layout.params_bytes);
  std::memcpy(staging.bytes() + layout.labels_offset, dense_labels.data<int64_t>(),
              layout.labels_bytes);
  std::memcpy(staging.bytes() + layout.images_offset, nhwc.data<uint8_t>(), layout.images_bytes);

  // Device copies from the caching allocator, for the compute stream: freeing
  // them when this function returns is safe, since any later user of their
  // memory is queued on the same stream, behind the transform that reads them.
  Tensor device_params = empty({static_cast<int64_t>(layout.params_bytes)},
                               TensorOptions(DType::u8).with_device(device));
  Tensor device_images =
      empty(images.shape(),
            TensorOptions(DType::u8).with_device(device).with_format(MemoryFormat::channels_last));
  const cuda::Stream stream = cuda::compute_stream(device.index);
  staging.upload(device_params.data_ptr(), layout.params_bytes, stream, layout.params_offset);
  staging.upload(device_labels.data_ptr(), layout.labels_bytes, stream, layout.labels_offset);
  staging.upload(device_images.data_ptr(), layout.images_bytes, stream, layout.images_offset);

  cuda::apply_transform_cuda(device_images, static_cast<const CropFlip*>(device_params.data_ptr()),
                             transform_, out);
  return LabeledBatch{out, device_labels};
}

}  // namespace b3
