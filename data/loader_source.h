// LoaderBatchSource: the training loop's BatchSource (data/batch_source.h)
// made of a DataLoader (uint8 batches, background threads) and the image
// transform (float images in the model's dtype, memory format and device).
//
//   LoaderBatchSource train(splits.train, {.batch_size = 128, .drop_last = true},
//                           TransformOptions::reference_train(), seed);
//   LoaderBatchSource test(splits.test, {.batch_size = 256, .shuffle = false},
//                          TransformOptions::reference_eval(), seed);
//
// Augmentation (random crops, flips) draws from a generator reseeded at every
// start_epoch from (seed, epoch), on the consumer's thread, so a run is the
// same whatever the number of loader threads.
#pragma once

#include <memory>
#include <optional>

#include "data/batch_source.h"
#include "data/loader.h"
#include "data/transforms.h"

namespace b3 {

class LoaderBatchSource : public BatchSource {
 public:
  // The loader's own seed (the shuffle) is loader_options.seed; `augment_seed`
  // drives the crops and flips.
  LoaderBatchSource(std::shared_ptr<const Dataset> dataset, LoaderOptions loader_options,
                    TransformOptions transform, uint64_t augment_seed = 0);

  void start_epoch(int64_t epoch) override;
  std::optional<LabeledBatch> next() override;  // labels on transform.device too
  int64_t batches_per_epoch() const override { return loader_.batches_per_epoch(); }

  const DataLoader& loader() const { return loader_; }
  const TransformOptions& transform() const { return transform_; }

 private:
  DataLoader loader_;
  TransformOptions transform_;
  uint64_t augment_seed_;
  Generator augment_;
};

}  // namespace b3
