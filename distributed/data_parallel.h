// DataParallel: PyTorch's DistributedDataParallel semantics on a
// ProcessGroup (distributed/process_group.h), for the training step
// (train/trainer.h's StepOptions::data_parallel):
//
//   at construction   rank 0's parameters and buffers are broadcast, so every
//                     replica starts from the same weights (DDP's init sync);
//   before_forward()  rank 0's buffers are broadcast (BatchNorm's running
//                     statistics and counters: DDP's broadcast_buffers=True),
//                     so BatchNorm normalizes per replica with its own batch
//                     but every replica carries rank 0's statistics;
//   after_backward()  every gradient becomes the mean over ranks,
//                     g = (g_0 + ... + g_{N-1}) / N, bucket by bucket, so the
//                     optimizer, run the same way on every rank, keeps the
//                     replicas bit-identical.
//
// Buckets: as DDP, parameters in reverse registration order (roughly the
// order backward finishes their gradients) are grouped into buckets of at
// most `bucket_bytes` (default 25 MiB); each bucket is packed into one host
// buffer and all-reduced with one call. This first version reduces after
// backward has finished; overlapping the buckets with backward is still to
// come. Gradients on a CUDA device travel through the host.
//
// The batch size is per process, as in DDP: N ranks of batch B train on a
// global batch of N x B (the sharded sampler, distributed/sharding.h, gives
// each rank its part).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "distributed/process_group.h"
#include "layers/module.h"
#include "tensor/tensor.h"

namespace b3::dist {

inline constexpr size_t kDefaultBucketBytes = size_t{25} << 20;

// A bucket: indices into the parameter list, and its size.
struct GradientBucket {
  std::vector<size_t> parameters;
  int64_t elements = 0;
  size_t bytes = 0;
};

// Parameters (by index) in reverse order, packed greedily into buckets of at
// most `bucket_bytes` each (a parameter larger than that gets a bucket of its
// own). Every parameter is in exactly one bucket.
std::vector<GradientBucket> make_gradient_buckets(const std::vector<Tensor>& parameters,
                                                  size_t bucket_bytes = kDefaultBucketBytes);

// Copies rank `root`'s values of every tensor in `tensors` to all ranks, in place.
void broadcast_tensors(const std::vector<Tensor>& tensors, ProcessGroup& group, int root = 0);

// Every tensor's gradient (all must have one, of one floating dtype) replaced
// by its mean over the ranks, one all-reduce per bucket.
void average_gradients(const std::vector<Tensor>& parameters,
                       const std::vector<GradientBucket>& buckets, ProcessGroup& group);

// A 64-bit FNV-1a hash of the bytes of every parameter of `model` (in
// registration order): equal on every rank when the replicas' weights are
// identical (BatchNorm's buffers differ between ranks after a step, each
// from its own batch, until the next forward broadcasts rank 0's).
uint64_t parameter_checksum(const Module& model);

// Throws std::runtime_error on every rank unless every rank passed the same
// settings; the message names each differing setting with its value on rank 0
// and on the first rank that differs. Settings are (name, value) pairs in a
// fixed order.
void require_same_settings(const std::vector<std::pair<std::string, std::string>>& settings,
                           ProcessGroup& group);

class DataParallel {
 public:
  DataParallel(Module& model, ProcessGroup& group, size_t bucket_bytes = kDefaultBucketBytes);

  ProcessGroup& group() { return group_; }
  int rank() const { return group_.rank(); }
  int world_size() const { return group_.size(); }
  const std::vector<GradientBucket>& buckets() const { return buckets_; }

  void before_forward();
  void after_backward();

  // Wall seconds spent in before_forward and after_backward since
  // construction (the broadcasts and all-reduces, with their packing), for
  // benchmarks; none of it overlaps compute yet.
  double communication_seconds() const { return communication_seconds_; }

 private:
  ProcessGroup& group_;
  std::vector<Tensor> parameters_;
  std::vector<Tensor> buffers_;
  std::vector<GradientBucket> buckets_;
  double communication_seconds_ = 0.0;
};

}  // namespace b3::dist
