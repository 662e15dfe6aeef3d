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
// most `bucket_bytes` (default 25 MiB). Each parameter carries a grad-ready
// hook (tensor.h); when a bucket's last gradient is final, the bucket goes to
// a communication thread (MPI makes no progress on its own), which packs it
// into one host buffer, all-reduces it and writes the mean back, while
// backward goes on with the earlier layers. Buckets start strictly in index
// order, so every rank issues the same collectives in the same order.
// after_backward() waits for them all. Gradients on a CUDA device travel
// through the host (NCCL is still to come).
//
// The batch size is per process, as in DDP: N ranks of batch B train on a
// global batch of N x B (the sharded sampler, distributed/sharding.h, gives
// each rank its part).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
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
  // `overlap`: all-reduce each bucket on a communication thread as soon as
  // backward has finished its gradients (see below); false: all buckets after
  // backward, on the calling thread.
  DataParallel(Module& model, ProcessGroup& group, size_t bucket_bytes = kDefaultBucketBytes,
               bool overlap = true);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  ProcessGroup& group() { return group_; }
  int rank() const { return group_.rank(); }
  int world_size() const { return group_.size(); }
  const std::vector<GradientBucket>& buckets() const { return buckets_; }

  // Starts a step: rank 0's buffers to every rank, the buckets reset.
  void before_forward();
  // Ends the gradient part of a step: every bucket averaged (the ones backward
  // has not launched yet are launched now, in order), then waits for them.
  void after_backward();

  // Figures since construction, for benchmarks: seconds the buckets' packing,
  // all-reduces and unpacking took, and the part of it the training thread
  // waited for in after_backward() (the rest was hidden behind backward);
  // also the seconds of the buffer broadcasts.
  double reduce_seconds() const { return reduce_seconds_; }
  double waited_seconds() const { return waited_seconds_; }
  double broadcast_seconds() const { return broadcast_seconds_; }
  // The order the buckets' all-reduces started in during the last step, each
  // with whether backward was still running then.
  struct Launch {
    size_t bucket = 0;
    bool during_backward = false;
  };
  std::vector<Launch> last_launches() const;

 private:
  void on_gradient_ready(size_t parameter);
  void launch_ready_buckets(bool during_backward);  // with mutex_ held
  void communication_loop();
  void reduce_bucket(size_t bucket);

  ProcessGroup& group_;
  std::vector<Tensor> parameters_;
  std::vector<Tensor> buffers_;
  std::vector<GradientBucket> buckets_;
  bool overlap_ = true;
  std::vector<size_t> bucket_of_;  // parameter index -> its bucket
  // Per bucket: its packed host buffer, kept from step to step (the thread
  // and the after-backward path use a bucket's buffer one at a time).
  std::vector<std::vector<unsigned char>> scratch_;
  double reduce_seconds_ = 0.0, waited_seconds_ = 0.0, broadcast_seconds_ = 0.0;

  // The step's bucket state, shared with the communication thread.
  mutable std::mutex mutex_;
  std::condition_variable work_ready_, work_done_;
  bool in_step_ = false;
  bool stopping_ = false;
  std::vector<int> pending_;  // per bucket: parameters whose gradient is not final yet
  std::vector<bool> ready_;
  size_t next_to_launch_ = 0;  // buckets start strictly in order, the same on every rank
  std::deque<size_t> queue_;
  size_t completed_ = 0;
  bool busy_ = false;  // the thread is inside a collective
  std::exception_ptr error_;
  std::vector<Launch> launches_;
  std::thread thread_;
};

}  // namespace b3::dist
