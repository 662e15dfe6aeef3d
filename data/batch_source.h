// BatchSource: what the training loop reads from. Each epoch yields
// model-ready batches (float images [N, C, H, W] in the model's dtype and
// memory format, labels i64 [N]) until it returns nothing. The data loader
// with its transforms is one BatchSource; a fixed in-memory set of batches
// (tests, overfitting checks) is another.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "tensor/tensor.h"

namespace b3 {

struct LabeledBatch {
  Tensor images;  // float [N, C, H, W] (uint8 [N, H, W, C] from data/device_batches.h's raw source)
  Tensor labels;  // i64 [N]
};

class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual void start_epoch(int64_t epoch) = 0;
  virtual std::optional<LabeledBatch> next() = 0;
  virtual int64_t batches_per_epoch() const = 0;
};

// The same batches every epoch, in order.
class FixedBatches : public BatchSource {
 public:
  explicit FixedBatches(std::vector<LabeledBatch> batches) : batches_(std::move(batches)) {}
  void start_epoch(int64_t) override { position_ = 0; }
  std::optional<LabeledBatch> next() override {
    if (position_ >= batches_.size()) return std::nullopt;
    return batches_[position_++];
  }
  int64_t batches_per_epoch() const override { return static_cast<int64_t>(batches_.size()); }

 private:
  std::vector<LabeledBatch> batches_;
  size_t position_ = 0;
};

}  // namespace b3
