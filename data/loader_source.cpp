// LoaderBatchSource: DataLoader batches through the image transform.
#include "data/loader_source.h"

namespace b3 {

LoaderBatchSource::LoaderBatchSource(std::shared_ptr<const Dataset> dataset,
                                     LoaderOptions loader_options, TransformOptions transform,
                                     uint64_t augment_seed)
    : loader_(std::move(dataset), loader_options),
      transform_(std::move(transform)),
      augment_seed_(augment_seed) {
  // Fail now, not at the first batch, when the transform cannot fit the images.
  const ImageShape shape = loader_.dataset()->image_shape();
  transform_geometry(transform_, shape.height, shape.width, shape.channels);
}

void LoaderBatchSource::start_epoch(int64_t epoch) {
  // A stream apart from the loader's shuffle (which uses the loader's seed).
  augment_.reseed(DataLoader::augment_epoch_seed(augment_seed_, epoch));
  loader_.start_epoch(epoch);
}

std::optional<LabeledBatch> LoaderBatchSource::next() {
  std::optional<Batch> batch = loader_.next();
  if (!batch) return std::nullopt;
  LabeledBatch out;
  out.images = transform_images(batch->images, transform_, augment_);
  out.labels = transform_.device.is_cpu() ? batch->labels : batch->labels.to(transform_.device);
  return out;
}

}  // namespace b3
