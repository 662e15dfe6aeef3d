// DataLoader: batches of uint8 images and int64 labels from a Dataset, in a
// seeded order, assembled by background threads into a bounded queue.
//
//   DataLoader loader(train, {.batch_size = 128, .shuffle = true, .drop_last = true});
//   for (int64_t epoch = 0; epoch < epochs; ++epoch) {
//     loader.start_epoch(epoch);
//     while (std::optional<Batch> batch = loader.next()) { ... }
//   }
//
// Order: with shuffle, epoch e visits the examples in
// random_permutation(size, epoch_seed(seed, e)) (split.h), the same on every
// machine and whatever the number of workers; without shuffle, in index order.
// Batches come out in that order. drop_last drops the final partial batch
// (training); without it the last batch is smaller (evaluation).
//
// Threads: `num_workers` threads assemble batches ahead of the consumer, at
// most `prefetch` batches (ready or in progress) ahead of the one next()
// returns. start_epoch() abandons whatever the previous epoch left; the
// destructor stops and joins the workers, also mid-epoch. An exception thrown
// while assembling a batch (e.g. by Dataset::get) is re-thrown by the next()
// that would return that batch, and by every later next() of the epoch.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "data/dataset.h"
#include "tensor/tensor.h"

namespace b3 {

struct Batch {
  // uint8, logical shape [N, C, H, W] (b3's dimension order) with channels_last
  // strides: the bytes are N images of H x W x C, exactly as the dataset gives them.
  Tensor images;
  Tensor labels;                 // int64 [N]
  std::vector<int64_t> indices;  // the dataset index of each example
  int64_t batch_index = 0;       // position in the epoch, from 0
  int64_t size() const { return static_cast<int64_t>(indices.size()); }
};

struct LoaderOptions {
  int64_t batch_size = 128;
  bool shuffle = true;
  bool drop_last = false;
  uint64_t seed = 0;
  int num_workers = 2;  // 0: next() assembles each batch itself, on the caller's thread
  int prefetch = 4;     // batches in flight ahead of the consumer (>= 1)
  // Data parallelism: only shard `shard_rank` of `shard_count` of each
  // epoch's order (distributed/sharding.h: with drop_last every shard has
  // floor(N / count) examples, as DistributedSampler(drop_last=True);
  // without, each example is in exactly one shard).
  int shard_rank = 0;
  int shard_count = 1;
};

class DataLoader {
 public:
  // Throws std::invalid_argument for a null dataset, batch_size <= 0, a batch
  // size above the dataset size with drop_last (no batch at all), negative
  // num_workers or prefetch < 1.
  DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Begins epoch `epoch` (any number; the order depends only on seed and epoch).
  void start_epoch(int64_t epoch);
  // The next batch of the epoch, or nullopt when it is over.
  std::optional<Batch> next();

  int64_t batches_per_epoch() const;
  // Examples per epoch in this loader's shard (the dataset size without sharding).
  int64_t examples_per_epoch() const;
  int64_t size() const { return dataset_->size(); }
  const LoaderOptions& options() const { return options_; }
  const std::shared_ptr<const Dataset>& dataset() const { return dataset_; }
  // The example order of the current epoch.
  const std::vector<int64_t>& epoch_order() const { return *order_; }

  // The generator seed of epoch `epoch`'s shuffle.
  static uint64_t epoch_seed(uint64_t seed, int64_t epoch);
  // The seed of epoch `epoch`'s crops and flips, from a source's augment seed
  // (decorrelated from the shuffle's even when both seeds are equal). Every
  // BatchSource that augments (CPU and GPU pipelines) uses it, so equal seeds
  // give equal augmentation.
  static uint64_t augment_epoch_seed(uint64_t augment_seed, int64_t epoch) {
    return epoch_seed(augment_seed ^ 0xA5A5A5A5A5A5A5A5ull, epoch);
  }
  // The order of an epoch, as the loader visits it.
  static std::vector<int64_t> order_for_epoch(int64_t size, bool shuffle, uint64_t seed,
                                              int64_t epoch);

 private:
  Batch assemble(int64_t batch_index, const std::vector<int64_t>& order) const;
  void worker_loop();

  std::shared_ptr<const Dataset> dataset_;
  LoaderOptions options_;
  ImageShape shape_;

  // Shared with the workers, under mutex_.
  std::mutex mutex_;
  std::condition_variable work_ready_;   // workers wait for a batch to claim
  std::condition_variable batch_ready_;  // next() waits for its batch
  bool stopping_ = false;
  bool started_ = false;
  uint64_t generation_ = 0;  // bumped by start_epoch; stale work is dropped
  std::shared_ptr<const std::vector<int64_t>> order_;
  int64_t next_to_claim_ = 0;
  int64_t next_to_deliver_ = 0;
  std::map<int64_t, Batch> ready_;
  std::map<int64_t, std::exception_ptr> failed_;
  std::exception_ptr epoch_error_;
  std::vector<std::thread> workers_;
};

}  // namespace b3
