// DataLoader: the epoch order, batch assembly, and the worker threads.
#include "data/loader.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "data/split.h"
#include "distributed/sharding.h"

namespace b3 {

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options)
    : dataset_(std::move(dataset)), options_(options) {
  if (dataset_ == nullptr) throw std::invalid_argument("DataLoader: the dataset is null");
  if (options_.batch_size <= 0) {
    throw std::invalid_argument("DataLoader: batch size must be positive, got " +
                                std::to_string(options_.batch_size));
  }
  if (options_.shard_count < 1 || options_.shard_rank < 0 ||
      options_.shard_rank >= options_.shard_count) {
    throw std::invalid_argument("DataLoader: shard " + std::to_string(options_.shard_rank) +
                                " of " + std::to_string(options_.shard_count) + " does not exist");
  }
  if (options_.drop_last && options_.batch_size > examples_per_epoch()) {
    throw std::invalid_argument("DataLoader: batch size " + std::to_string(options_.batch_size) +
                                " is larger than the " +
                                (options_.shard_count > 1 ? "shard of each rank (" : "dataset (") +
                                std::to_string(examples_per_epoch()) +
                                " examples), so with drop_last there would be no batch at all");
  }
  if (dataset_->size() == 0) throw std::invalid_argument("DataLoader: the dataset is empty");
  if (options_.num_workers < 0) {
    throw std::invalid_argument("DataLoader: num_workers must be >= 0, got " +
                                std::to_string(options_.num_workers));
  }
  if (options_.prefetch < 1) {
    throw std::invalid_argument("DataLoader: prefetch must be >= 1, got " +
                                std::to_string(options_.prefetch));
  }
  shape_ = dataset_->image_shape();
  order_ = std::make_shared<const std::vector<int64_t>>();
  for (int w = 0; w < options_.num_workers; ++w) workers_.emplace_back([this] { worker_loop(); });
}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_ready_.notify_all();
  for (std::thread& worker : workers_) worker.join();
}

uint64_t DataLoader::epoch_seed(uint64_t seed, int64_t epoch) {
  // Mix so that (seed, epoch) pairs give unrelated streams; Generator
  // splitmixes its seed again.
  return seed * 0x9E3779B97F4A7C15ull ^ (static_cast<uint64_t>(epoch) + 1) * 0xD1B54A32D192ED03ull;
}

std::vector<int64_t> DataLoader::order_for_epoch(int64_t size, bool shuffle, uint64_t seed,
                                                 int64_t epoch) {
  if (shuffle) return random_permutation(size, epoch_seed(seed, epoch));
  std::vector<int64_t> order(static_cast<size_t>(size));
  for (int64_t i = 0; i < size; ++i) order[static_cast<size_t>(i)] = i;
  return order;
}

int64_t DataLoader::examples_per_epoch() const {
  return dist::shard_size(dataset_->size(), options_.shard_rank, options_.shard_count,
                          options_.drop_last);
}

int64_t DataLoader::batches_per_epoch() const {
  const int64_t n = examples_per_epoch();
  const int64_t b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

void DataLoader::start_epoch(int64_t epoch) {
  std::vector<int64_t> epoch_order =
      order_for_epoch(dataset_->size(), options_.shuffle, options_.seed, epoch);
  if (options_.shard_count > 1) {
    epoch_order =
        dist::shard_of(epoch_order, options_.shard_rank, options_.shard_count, options_.drop_last);
  }
  auto order = std::make_shared<const std::vector<int64_t>>(std::move(epoch_order));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++generation_;
    started_ = true;
    order_ = std::move(order);
    next_to_claim_ = 0;
    next_to_deliver_ = 0;
    ready_.clear();
    failed_.clear();
    epoch_error_ = nullptr;
  }
  work_ready_.notify_all();
}

Batch DataLoader::assemble(int64_t batch_index, const std::vector<int64_t>& order) const {
  const int64_t n = static_cast<int64_t>(order.size());
  const int64_t begin = batch_index * options_.batch_size;
  const int64_t count = std::min(options_.batch_size, n - begin);
  Batch batch;
  batch.batch_index = batch_index;
  batch.images = empty({count, shape_.channels, shape_.height, shape_.width},
                       TensorOptions(DType::u8).with_format(MemoryFormat::channels_last));
  batch.labels = empty({count}, TensorOptions(DType::i64));
  batch.indices.assign(order.begin() + begin, order.begin() + begin + count);
  uint8_t* pixels = batch.images.data<uint8_t>();
  int64_t* labels = batch.labels.data<int64_t>();
  const int64_t image_bytes = shape_.bytes();
  const int64_t num_classes = dataset_->num_classes();
  for (int64_t k = 0; k < count; ++k) {
    const int64_t index = batch.indices[static_cast<size_t>(k)];
    labels[k] = dataset_->get(index, pixels + k * image_bytes);
    if (labels[k] < 0 || labels[k] >= num_classes) {
      throw std::runtime_error("DataLoader: example " + std::to_string(index) + " has label " +
                               std::to_string(labels[k]) + ", outside the dataset's " +
                               std::to_string(num_classes) + " classes");
    }
  }
  return batch;
}

void DataLoader::worker_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    const int64_t total = batches_per_epoch();
    work_ready_.wait(lock, [&] {
      return stopping_ || (started_ && next_to_claim_ < total &&
                           next_to_claim_ < next_to_deliver_ + options_.prefetch);
    });
    if (stopping_) return;
    const int64_t batch_index = next_to_claim_++;
    const uint64_t generation = generation_;
    const std::shared_ptr<const std::vector<int64_t>> order = order_;
    lock.unlock();
    std::optional<Batch> batch;
    std::exception_ptr error;
    try {
      batch = assemble(batch_index, *order);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    if (generation != generation_) continue;  // start_epoch moved on: drop it
    if (error) {
      failed_[batch_index] = error;
    } else {
      ready_[batch_index] = std::move(*batch);
    }
    batch_ready_.notify_all();
  }
}

std::optional<Batch> DataLoader::next() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!started_) {
    throw std::logic_error("DataLoader::next: call start_epoch(epoch) before asking for batches");
  }
  if (epoch_error_) std::rethrow_exception(epoch_error_);
  if (next_to_deliver_ >= batches_per_epoch()) return std::nullopt;
  const int64_t wanted = next_to_deliver_;

  if (workers_.empty()) {  // synchronous: assemble here
    const std::shared_ptr<const std::vector<int64_t>> order = order_;
    lock.unlock();
    try {
      Batch batch = assemble(wanted, *order);
      lock.lock();
      ++next_to_deliver_;
      return batch;
    } catch (...) {
      if (!lock.owns_lock()) lock.lock();
      epoch_error_ = std::current_exception();
      throw;
    }
  }

  batch_ready_.wait(lock, [&] { return ready_.count(wanted) > 0 || failed_.count(wanted) > 0; });
  if (auto failure = failed_.find(wanted); failure != failed_.end()) {
    epoch_error_ = failure->second;
    std::rethrow_exception(epoch_error_);
  }
  auto found = ready_.find(wanted);
  Batch batch = std::move(found->second);
  ready_.erase(found);
  ++next_to_deliver_;
  lock.unlock();
  work_ready_.notify_all();
  return batch;
}

}  // namespace b3
