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
// order backward finishes their gradients) are grouped into buckets: the
// first (the last layers, whose gradients are final first) of at most
// `first_bucket_bytes` (1 MiB) so communication starts early, the others of
// at most `bucket_bytes` (25 MiB), DDP's bucket_cap_mb.
//
// Flat buffers: each bucket owns one flat parameter buffer and one flat
// gradient buffer. At construction every parameter's data moves into its
// slice of the bucket's parameter buffer (Tensor::set_data: same tensor, new
// storage), and before each forward its gradient is set to the matching
// slice of the gradient buffer, zeroed, so backward accumulates straight into
// the bucket (DDP's gradient_as_bucket_view). A bucket is then all-reduced in
// place: no packing, no unpacking. Each slice starts on the device's
// allocation boundary (64 bytes on the CPU, 256 on CUDA), as a tensor of its
// own would; the padding between slices is zero and is reduced along. The
// gradient buffer is placed so that every gradient lies half a page (mod 4
// KiB) from its parameter (see data_parallel.cpp: 4K aliasing).
//
// Each parameter carries a grad-ready hook (tensor.h); when a bucket's last
// gradient is final, the bucket goes to a communication thread (MPI makes no
// progress on its own), which all-reduces it and divides by the world size,
// while backward goes on with the earlier layers. That thread needs a core of
// its own: an all-reduce on the CPU is CPU work (copies, sums, and MPI's busy
// polling while it waits for the other ranks), so on cores that the ranks'
// compute threads already fill it gains nothing and can slow backward down
// (2 ranks x 1 thread on 2 cores, bench-step 2 x 64, four alternating
// rounds: 859-1021 img/s overlapped, 935-986 after backward; 2% lower on
// average). Overlap::automatic therefore overlaps only when
// the ranks on this machine, each with its compute threads plus one, fit in
// the cores this process may run on; otherwise every bucket goes after
// backward, on the training thread. Buckets start strictly in
// index order, so every rank issues the same collectives in the same order.
// after_backward() waits for them all, and names any parameter backward did
// not reach (as DDP without find_unused_parameters, every parameter must take
// part in every step).
//
// On CUDA devices with NCCL (distributed/nccl_communicator.h) buffers and
// buckets go device to device: a bucket's all-reduce (ncclAvg) is queued on
// the communicator's stream the moment backward has queued its last gradient,
// behind an event on the compute stream, so it overlaps the rest of backward
// on the GPU with no host wait and no thread; after_backward() makes the
// compute stream wait for them (the optimizer's kernels queue behind). One
// GPU per rank, from the parameters' device. Without NCCL, CUDA gradients
// travel through the host, one bucket copy each way, after backward.
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
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "distributed/nccl_communicator.h"
#include "distributed/process_group.h"
#include "layers/module.h"
#include "tensor/tensor.h"

namespace b3::dist {

inline constexpr size_t kDefaultBucketBytes = size_t{25} << 20;      // DDP's bucket_cap_mb
inline constexpr size_t kDefaultFirstBucketBytes = size_t{1} << 20;  // DDP's first bucket

// A bucket: indices into the parameter list, and its size.
struct GradientBucket {
  std::vector<size_t> parameters;
  int64_t elements = 0;
  size_t bytes = 0;
};

// Parameters (by index) in reverse order, packed greedily into buckets: the
// first of at most `first_bucket_bytes`, the others of at most
// `bucket_bytes` (a parameter larger than the cap gets a bucket of its own).
// A bucket holds one dtype on one device. Every parameter is in exactly one
// bucket.
std::vector<GradientBucket> make_gradient_buckets(
    const std::vector<Tensor>& parameters, size_t bucket_bytes = kDefaultBucketBytes,
    size_t first_bucket_bytes = kDefaultFirstBucketBytes);

// Copies rank `root`'s values of every tensor in `tensors` to all ranks, in place.
void broadcast_tensors(const std::vector<Tensor>& tensors, ProcessGroup& group, int root = 0);

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

// Whether a communication thread per rank has a core of its own: the
// `local_ranks` ranks on this machine (0: unknown, taken as `world_size`),
// each with `threads` compute threads plus one, fit in `cores`.
bool communication_has_a_core(int local_ranks, int world_size, int threads, int cores);

enum class Overlap { automatic, on, off };
// "auto", "on" or "off" (--overlap) as an Overlap; throws std::invalid_argument otherwise.
Overlap parse_overlap(const std::string& name);

// `mib` MiB in bytes (--bucket-mb); throws std::invalid_argument unless it is
// positive and at least one byte.
size_t bucket_bytes_of_mib(double mib);

struct DataParallelOptions {
  size_t bucket_bytes = kDefaultBucketBytes;
  size_t first_bucket_bytes = kDefaultFirstBucketBytes;
  // CPU gradients: all-reduce each bucket on a communication thread as soon
  // as backward has finished its gradients (on), every bucket after backward
  // on the calling thread (off), or on when a core is free for it (automatic,
  // see above). NCCL always overlaps on the GPU; CUDA gradients through the
  // host never do.
  Overlap overlap = Overlap::automatic;
  // Communicate even in a world of one (tests: the NCCL path on one GPU).
  bool communicate_alone = false;
  double nccl_timeout_seconds = 300.0;  // a collective that takes longer ends the job
};

class DataParallel {
 public:
  DataParallel(Module& model, ProcessGroup& group, DataParallelOptions options = {});
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  ProcessGroup& group() { return group_; }
  int rank() const { return group_.rank(); }
  int world_size() const { return group_.size(); }
  const std::vector<GradientBucket>& buckets() const { return buckets_; }
  // Bucket b's flat gradient buffer (1-D; the parameters' gradients are its slices).
  const Tensor& bucket_gradients(size_t b) const { return flat_grads_.at(b); }
  // "nccl" (device buffers over NCCL), "host" (through the process group),
  // or "none" (a world of one).
  std::string transport() const;
  // Whether buckets start during backward (a communication thread, or NCCL).
  bool overlaps() const { return overlap_; }

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
  void require_every_gradient() const;  // with mutex_ held
  void broadcast_model_state(const std::vector<Tensor>& tensors);

  ProcessGroup& group_;
  std::vector<std::string> names_;
  std::vector<Tensor> parameters_;
  std::vector<Tensor> buffers_;
  std::vector<Tensor> frozen_;  // parameters that do not train: broadcast once
  std::vector<GradientBucket> buckets_;
  bool overlap_ = false;                          // buckets start during backward
  bool communicate_ = false;                      // more than one rank, or communicate_alone
  std::vector<size_t> bucket_of_;                 // parameter index -> its bucket
  std::vector<Tensor> flat_params_, flat_grads_;  // per bucket
  std::vector<Tensor> grad_views_;                // per parameter: its slice of flat_grads_
  std::vector<bool> got_gradient_;                // per parameter, this step
  // After the buffers it reduces, so that it is destroyed (and its
  // collectives finished) before they are.
  std::unique_ptr<NcclCommunicator> nccl_;
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
