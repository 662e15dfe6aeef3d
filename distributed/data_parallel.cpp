// Bucketing, broadcasts, gradient averaging, checksums and the settings check
// of data-parallel training (distributed/data_parallel.h).
#include "distributed/data_parallel.h"

#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include "distributed/launch.h"
#include "tensor/dtype.h"

namespace b3::dist {

namespace {

// A dense host tensor with t's values (t itself when it is one already).
Tensor host_dense(const Tensor& t) {
  Tensor host = t.device().is_cpu() ? t : t.to(Device::cpu());
  return host.is_dense() ? host : host.contiguous();
}

// Writes `host` (dense, on the CPU, same shape and dtype) back into `t`.
void write_back(Tensor& t, const Tensor& host) {
  if (host.data_ptr() != t.data_ptr()) t.copy_(host);
}

// The flat buffer's elements summed over the ranks, then divided by the
// world size (DDP's mean). A CUDA buffer goes through the host, one copy each
// way.
template <typename T>
void average_in_place(T* data, size_t count, ProcessGroup& group) {
  group.all_reduce_sum(data, count);
  const T world = static_cast<T>(group.size());
  for (size_t i = 0; i < count; ++i) data[i] /= world;
}

void average_flat(Tensor& flat, ProcessGroup& group) {
  Tensor host = host_dense(flat);
  const auto count = static_cast<size_t>(host.numel());
  switch (host.dtype()) {
    case DType::f32: average_in_place(host.data<float>(), count, group); break;
    case DType::f64: average_in_place(host.data<double>(), count, group); break;
    default:
      throw std::runtime_error(std::string("data parallel: cannot average ") +
                               dtype_name(host.dtype()) + " gradients");
  }
  write_back(flat, host);
}

constexpr int64_t kPageBytes = 4096;

int64_t round_up(int64_t n, int64_t multiple) { return (n + multiple - 1) / multiple * multiple; }

// The cores this process may run on (its affinity mask; mpirun --bind-to
// none leaves every core).
int usable_cores() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (sched_getaffinity(0, sizeof mask, &mask) == 0) return CPU_COUNT(&mask);
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace

std::vector<GradientBucket> make_gradient_buckets(const std::vector<Tensor>& parameters,
                                                  size_t bucket_bytes, size_t first_bucket_bytes) {
  if (bucket_bytes == 0 || first_bucket_bytes == 0)
    throw std::invalid_argument("make_gradient_buckets: a bucket size of 0 bytes");
  std::vector<GradientBucket> buckets;
  for (size_t k = parameters.size(); k-- > 0;) {
    const Tensor& p = parameters[k];
    const size_t bytes = static_cast<size_t>(p.numel()) * dtype_size(p.dtype());
    const size_t cap = buckets.size() == 1 ? first_bucket_bytes : bucket_bytes;  // the open one's
    const bool other_kind = !buckets.empty() && !buckets.back().parameters.empty() &&
                            (parameters[buckets.back().parameters[0]].dtype() != p.dtype() ||
                             parameters[buckets.back().parameters[0]].device() != p.device());
    if (buckets.empty() || other_kind ||
        (buckets.back().bytes > 0 && buckets.back().bytes + bytes > cap))
      buckets.emplace_back();
    GradientBucket& b = buckets.back();
    b.parameters.push_back(k);
    b.elements += p.numel();
    b.bytes += bytes;
  }
  return buckets;
}

bool communication_has_a_core(int local_ranks, int world_size, int threads, int cores) {
  const int ranks = local_ranks > 0 ? local_ranks : world_size;
  return static_cast<int64_t>(ranks) * (std::max(threads, 1) + 1) <= cores;
}

Overlap parse_overlap(const std::string& name) {
  if (name == "auto") return Overlap::automatic;
  if (name == "on") return Overlap::on;
  if (name == "off") return Overlap::off;
  throw std::invalid_argument("--overlap must be auto, on or off, got '" + name + "'");
}

size_t bucket_bytes_of_mib(double mib) {
  const double bytes = mib * 1024.0 * 1024.0;
  if (!(bytes >= 1.0) || bytes > 1e15)
    throw std::invalid_argument("--bucket-mb must be a positive size in MiB, got " +
                                std::to_string(mib));
  return static_cast<size_t>(bytes);
}

void broadcast_tensors(const std::vector<Tensor>& tensors, ProcessGroup& group, int root) {
  if (group.size() == 1) return;
  for (const Tensor& t : tensors) {
    Tensor target = t;
    Tensor host = host_dense(t);
    group.broadcast(host.data_ptr(), host.nbytes(), root);
    write_back(target, host);
  }
}

uint64_t parameter_checksum(const Module& model) {
  uint64_t hash = 1469598103934665603ull;
  auto add = [&](const Tensor& t) {
    const Tensor host = host_dense(t);
    const auto* bytes = static_cast<const unsigned char*>(host.data_ptr());
    for (size_t i = 0; i < host.nbytes(); ++i) {
      hash ^= bytes[i];
      hash *= 1099511628211ull;
    }
  };
  for (const auto& [name, p] : model.named_parameters()) add(p);
  return hash;
}

void require_same_settings(const std::vector<std::pair<std::string, std::string>>& settings,
                           ProcessGroup& group) {
  if (group.size() == 1) return;
  std::ostringstream encoded;  // name=value lines; a newline in a value is escaped
  for (const auto& [name, value] : settings) {
    std::string v = value;
    for (size_t i = 0; (i = v.find('\n', i)) != std::string::npos; i += 2) v.replace(i, 1, "\\n");
    encoded << name << '=' << v << '\n';
  }
  const std::vector<std::string> all = group.all_gather(encoded.str());
  for (int r = 1; r < group.size(); ++r) {
    if (all[static_cast<size_t>(r)] == all[0]) continue;
    std::istringstream mine(all[0]), theirs(all[static_cast<size_t>(r)]);
    std::string a, b, differences;
    while (true) {
      const bool more_a = static_cast<bool>(std::getline(mine, a));
      const bool more_b = static_cast<bool>(std::getline(theirs, b));
      if (!more_a && !more_b) break;
      if (a != b) {
        differences += "\n  rank 0: " + (more_a ? a : std::string("(nothing)")) + "\n  rank " +
                       std::to_string(r) + ": " + (more_b ? b : std::string("(nothing)"));
      }
    }
    throw std::runtime_error(
        "data parallel: the ranks were started with different settings "
        "(every rank must run the same configuration):" +
        differences);
  }
}

DataParallel::DataParallel(Module& model, ProcessGroup& group, DataParallelOptions options)
    : group_(group) {
  for (const auto& [name, p] : model.named_parameters()) {
    // A frozen parameter (requires_grad off) gets no gradient to average,
    // as in DDP; it is broadcast once below, like the weights.
    if (!p.requires_grad()) {
      frozen_.push_back(p);
      continue;
    }
    names_.push_back(name);
    parameters_.push_back(p);
  }
  for (const auto& [name, b] : model.named_buffers()) buffers_.push_back(b);
  if (parameters_.empty())
    throw std::invalid_argument("data parallel: the model has no parameters to train");
  buckets_ = make_gradient_buckets(parameters_, options.bucket_bytes, options.first_bucket_bytes);
  bucket_of_.assign(parameters_.size(), 0);
  grad_views_.resize(parameters_.size());
  got_gradient_.assign(parameters_.size(), false);
  // Each bucket's parameters move into one flat buffer, their gradients get
  // slices of another (see the header).
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const Tensor& first = parameters_[buckets_[b].parameters.front()];
    const TensorOptions where = TensorOptions(first.dtype()).with_device(first.device());
    const auto boundary = static_cast<int64_t>(default_allocation(first.device()).alignment /
                                               dtype_size(first.dtype()));
    std::vector<int64_t> offsets;
    int64_t total = 0;
    for (size_t k : buckets_[b].parameters) {
      if (!parameters_[k].is_dense())
        throw std::invalid_argument("data parallel: parameter " + names_[k] + " " +
                                    parameters_[k].str() + " is not dense");
      offsets.push_back(total);
      total += round_up(parameters_[k].numel(), std::max<int64_t>(boundary, 1));
    }
    Tensor flat_params = zeros({total}, where);
    // Every gradient lies half a page (mod 4 KiB) from its parameter. Two
    // page-aligned buffers with the same layout would put each parameter and
    // its gradient at the same address modulo 4 KiB, and the CPU's
    // store-to-load checks, which compare the low 12 address bits, then
    // stall the optimizer's loop over both (4K aliasing): measured with
    // bench-step, 2 ranks x batch 64, data-parallel steps took 274 ms
    // instead of 152 ms with Adam, 180 ms instead of 125 ms with SGD.
    const auto element = static_cast<int64_t>(dtype_size(first.dtype()));
    Tensor padded = zeros({kPageBytes / element + total}, where);
    // Bytes into `padded` where the gradients start: both buffers start on
    // the device's boundary, so this keeps the slices on it too.
    const auto params_at = reinterpret_cast<uintptr_t>(flat_params.data_ptr());
    const auto padded_at = reinterpret_cast<uintptr_t>(padded.data_ptr());
    const auto lead = static_cast<int64_t>((params_at + kPageBytes / 2 - padded_at) % kPageBytes);
    Tensor flat_grads = padded.narrow(0, lead / element, total);
    for (size_t i = 0; i < buckets_[b].parameters.size(); ++i) {
      const size_t k = buckets_[b].parameters[i];
      Tensor& p = parameters_[k];
      Tensor slice =
          flat_params.as_strided(p.shape(), p.strides(), flat_params.offset() + offsets[i]);
      slice.copy_(p);
      p.set_data(slice);  // the same parameter (optimizers keep their handles), in the bucket
      grad_views_[k] =
          flat_grads.as_strided(p.shape(), p.strides(), flat_grads.offset() + offsets[i]);
      bucket_of_[k] = b;
    }
    flat_params_.push_back(flat_params);
    flat_grads_.push_back(flat_grads);
  }
  pending_.assign(buckets_.size(), 0);
  ready_.assign(buckets_.size(), false);
  communicate_ = group_.size() > 1 || options.communicate_alone;
  const Device device = parameters_.front().device();
  if (communicate_ && device.is_cuda() && built_with_nccl())
    nccl_ = std::make_unique<NcclCommunicator>(group_, device.index, options.nccl_timeout_seconds);
  broadcast_model_state(flat_params_);
  if (!frozen_.empty()) broadcast_model_state(frozen_);
  broadcast_model_state(buffers_);
  if (communicate_) {
    for (size_t k = 0; k < parameters_.size(); ++k)
      parameters_[k].add_grad_ready_hook([this, k](const Tensor&) { on_gradient_ready(k); });
    // Through the host, CUDA gradients are final only when the stream gets
    // there, not when backward queues them: those buckets go after backward.
    if (device.is_cpu()) {
      const LaunchInfo launch = read_launch_environment();
      const bool spare_core = communication_has_a_core(launch.local_size, group_.size(),
                                                       omp_get_max_threads(), usable_cores());
      if (options.overlap == Overlap::on || (options.overlap == Overlap::automatic && spare_core))
        thread_ = std::thread([this] { communication_loop(); });
    }
  }
  overlap_ = thread_.joinable() || nccl_ != nullptr;
}

std::string DataParallel::transport() const {
  return !communicate_ ? "none" : nccl_ ? "nccl" : "host";
}

void DataParallel::broadcast_model_state(const std::vector<Tensor>& tensors) {
  if (!communicate_) return;
  if (nccl_) {
    nccl_->broadcast(tensors, 0);
    nccl_->compute_waits();
  } else {
    broadcast_tensors(tensors, group_);
  }
}

DataParallel::~DataParallel() {
  for (Tensor& p : parameters_) p.clear_grad_ready_hooks();
  if (!thread_.joinable()) return;
  bool in_collective = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    in_collective = busy_ || !queue_.empty();
  }
  work_ready_.notify_all();
  // A thread inside a collective waits for ranks that may never join it (this
  // rank is unwinding after an error; abort_job will end the job): leave it.
  if (in_collective)
    thread_.detach();
  else
    thread_.join();
}

void DataParallel::before_forward() {
  const auto start = std::chrono::steady_clock::now();
  broadcast_model_state(buffers_);
  broadcast_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // Gradients into the buckets, from zero (zero_grad may have dropped them).
  for (size_t k = 0; k < parameters_.size(); ++k) {
    const Tensor grad = parameters_[k].grad();
    if (!grad.defined() || !grad.is_same(grad_views_[k])) parameters_[k].set_grad(grad_views_[k]);
  }
  for (Tensor& flat : flat_grads_) flat.zero_();
  std::lock_guard<std::mutex> lock(mutex_);
  for (size_t b = 0; b < buckets_.size(); ++b) {
    pending_[b] = static_cast<int>(buckets_[b].parameters.size());
    ready_[b] = false;
  }
  std::fill(got_gradient_.begin(), got_gradient_.end(), false);
  next_to_launch_ = 0;
  completed_ = 0;
  launches_.clear();
  in_step_ = true;
}

void DataParallel::on_gradient_ready(size_t parameter) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!in_step_) return;  // a backward outside a data-parallel step
  got_gradient_[parameter] = true;
  const size_t b = bucket_of_[parameter];
  if (--pending_[b] == 0) {
    ready_[b] = true;
    if (thread_.joinable() || nccl_) launch_ready_buckets(true);
  }
}

void DataParallel::launch_ready_buckets(bool during_backward) {
  bool queued = false;
  while (next_to_launch_ < buckets_.size() && ready_[next_to_launch_]) {
    const size_t b = next_to_launch_++;
    launches_.push_back({b, during_backward});
    if (nccl_) {
      nccl_->all_reduce_mean(flat_grads_[b]);  // on the GPU, behind the gradients' kernels
    } else {
      queue_.push_back(b);
      queued = true;
    }
  }
  if (queued) work_ready_.notify_one();
}

void DataParallel::require_every_gradient() const {
  for (size_t k = 0; k < parameters_.size(); ++k) {
    if (got_gradient_[k]) continue;
    throw std::runtime_error("data parallel: parameter " + names_[k] + " " +
                             shape_str(parameters_[k].shape()) +
                             " got no gradient in this backward; every parameter must "
                             "take part in every step (as DDP without "
                             "find_unused_parameters)");
  }
}

void DataParallel::after_backward() {
  if (!communicate_) return;
  const auto start = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mutex_);
  if (!in_step_) throw std::logic_error("DataParallel::after_backward without before_forward");
  in_step_ = false;
  if (nccl_) {  // the rest queued in order; the optimizer's kernels wait on the GPU
    std::fill(ready_.begin(), ready_.end(), true);
    launch_ready_buckets(false);
    nccl_->compute_waits();
  } else if (!thread_.joinable()) {  // every bucket now, on this thread
    launches_.clear();
    for (size_t b = 0; b < buckets_.size(); ++b) launches_.push_back({b, false});
    lock.unlock();
    for (size_t b = 0; b < buckets_.size(); ++b) reduce_bucket(b);
    const double took =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    reduce_seconds_ += took;
    waited_seconds_ += took;
    lock.lock();
  } else {
    // Buckets backward did not finish (a parameter without a gradient) go
    // too, so every rank completes the same collectives before the error.
    std::fill(ready_.begin(), ready_.end(), true);
    launch_ready_buckets(false);
    work_done_.wait(lock, [&] { return completed_ == buckets_.size() || error_ != nullptr; });
    waited_seconds_ +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (error_) {
      std::exception_ptr error = error_;
      error_ = nullptr;
      std::rethrow_exception(error);
    }
  }
  require_every_gradient();
}

std::vector<DataParallel::Launch> DataParallel::last_launches() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return launches_;
}

void DataParallel::reduce_bucket(size_t bucket) { average_flat(flat_grads_[bucket], group_); }

void DataParallel::communication_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    work_ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    const size_t bucket = queue_.front();
    queue_.pop_front();
    busy_ = true;
    lock.unlock();
    const auto start = std::chrono::steady_clock::now();
    std::exception_ptr failure;
    try {
      reduce_bucket(bucket);
    } catch (...) {
      failure = std::current_exception();
    }
    const double took =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    lock.lock();
    busy_ = false;
    reduce_seconds_ += took;
    ++completed_;
    if (failure && !error_) error_ = failure;
    work_done_.notify_all();
  }
}

}  // namespace b3::dist
