// Bucketing, broadcasts, gradient averaging, checksums and the settings check
// of data-parallel training (distributed/data_parallel.h).
#include "distributed/data_parallel.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <sstream>
#include <stdexcept>

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

// The bucket's gradients packed into `scratch` (kept by the caller from step
// to step, so the buffer is allocated once), summed over the ranks, divided
// by the world size and written back.
template <typename T>
void average_bucket(const std::vector<Tensor>& grads, ProcessGroup& group,
                    std::vector<unsigned char>& scratch) {
  int64_t total = 0;
  for (const Tensor& g : grads) total += g.numel();
  scratch.resize(static_cast<size_t>(total) * sizeof(T));
  T* flat = reinterpret_cast<T*>(scratch.data());  // operator new's alignment suits T
  std::vector<Tensor> hosts;
  int64_t offset = 0;
  for (const Tensor& g : grads) {
    hosts.push_back(host_dense(g));
    std::memcpy(flat + offset, hosts.back().data_ptr(), static_cast<size_t>(g.numel()) * sizeof(T));
    offset += g.numel();
  }
  group.all_reduce_sum(flat, static_cast<size_t>(total));
  const T world = static_cast<T>(group.size());
  for (int64_t i = 0; i < total; ++i) flat[i] /= world;  // DDP's mean: the sum over the world size
  offset = 0;
  for (size_t i = 0; i < grads.size(); ++i) {
    std::memcpy(hosts[i].data_ptr(), flat + offset,
                static_cast<size_t>(grads[i].numel()) * sizeof(T));
    Tensor g = grads[i];
    write_back(g, hosts[i]);
    offset += grads[i].numel();
  }
}

// One bucket of average_gradients (see the header), through `scratch`.
void average_one_bucket(const std::vector<Tensor>& parameters, const GradientBucket& bucket,
                        ProcessGroup& group, std::vector<unsigned char>& scratch) {
  std::vector<Tensor> grads;
  for (size_t k : bucket.parameters) {
    if (k >= parameters.size()) throw std::invalid_argument("average_gradients: bad bucket");
    const Tensor g = parameters[k].grad();
    if (!g.defined()) {
      throw std::runtime_error("data parallel: parameter " + std::to_string(k) + " " +
                               shape_str(parameters[k].shape()) +
                               " got no gradient in this backward; every parameter must "
                               "take part in every step (as DDP without "
                               "find_unused_parameters)");
    }
    if (!grads.empty() && g.dtype() != grads.front().dtype()) {
      throw std::runtime_error("data parallel: a bucket mixes gradient dtypes " +
                               std::string(dtype_name(g.dtype())) + " and " +
                               dtype_name(grads.front().dtype()));
    }
    grads.push_back(g);
  }
  if (grads.empty()) return;
  switch (grads.front().dtype()) {
    case DType::f32: average_bucket<float>(grads, group, scratch); break;
    case DType::f64: average_bucket<double>(grads, group, scratch); break;
    default:
      throw std::runtime_error(std::string("data parallel: cannot average ") +
                               dtype_name(grads.front().dtype()) + " gradients");
  }
}

}  // namespace

std::vector<GradientBucket> make_gradient_buckets(const std::vector<Tensor>& parameters,
                                                  size_t bucket_bytes) {
  if (bucket_bytes == 0) throw std::invalid_argument("make_gradient_buckets: bucket_bytes is 0");
  std::vector<GradientBucket> buckets;
  for (size_t k = parameters.size(); k-- > 0;) {
    const Tensor& p = parameters[k];
    const size_t bytes = static_cast<size_t>(p.numel()) * dtype_size(p.dtype());
    if (buckets.empty() ||
        (buckets.back().bytes > 0 && buckets.back().bytes + bytes > bucket_bytes))
      buckets.emplace_back();
    GradientBucket& b = buckets.back();
    b.parameters.push_back(k);
    b.elements += p.numel();
    b.bytes += bytes;
  }
  return buckets;
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

void average_gradients(const std::vector<Tensor>& parameters,
                       const std::vector<GradientBucket>& buckets, ProcessGroup& group) {
  if (group.size() == 1) return;
  std::vector<unsigned char> scratch;
  for (const GradientBucket& bucket : buckets)
    average_one_bucket(parameters, bucket, group, scratch);
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

DataParallel::DataParallel(Module& model, ProcessGroup& group, size_t bucket_bytes, bool overlap)
    : group_(group), parameters_(model.parameters()), overlap_(overlap) {
  for (const auto& [name, b] : model.named_buffers()) buffers_.push_back(b);
  buckets_ = make_gradient_buckets(parameters_, bucket_bytes);
  bucket_of_.assign(parameters_.size(), 0);
  for (size_t b = 0; b < buckets_.size(); ++b)
    for (size_t k : buckets_[b].parameters) bucket_of_[k] = b;
  pending_.assign(buckets_.size(), 0);
  ready_.assign(buckets_.size(), false);
  scratch_.resize(buckets_.size());
  broadcast_tensors(parameters_, group_);
  broadcast_tensors(buffers_, group_);
  if (group_.size() > 1 && overlap_) {
    for (size_t k = 0; k < parameters_.size(); ++k)
      parameters_[k].add_grad_ready_hook([this, k](const Tensor&) { on_gradient_ready(k); });
    thread_ = std::thread([this] { communication_loop(); });
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
  broadcast_tensors(buffers_, group_);
  broadcast_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::lock_guard<std::mutex> lock(mutex_);
  for (size_t b = 0; b < buckets_.size(); ++b) {
    pending_[b] = static_cast<int>(buckets_[b].parameters.size());
    ready_[b] = false;
  }
  next_to_launch_ = 0;
  completed_ = 0;
  launches_.clear();
  in_step_ = true;
}

void DataParallel::on_gradient_ready(size_t parameter) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!in_step_) return;  // a backward outside a data-parallel step
  const size_t b = bucket_of_[parameter];
  if (--pending_[b] == 0) {
    ready_[b] = true;
    launch_ready_buckets(true);
  }
}

void DataParallel::launch_ready_buckets(bool during_backward) {
  bool launched = false;
  while (next_to_launch_ < buckets_.size() && ready_[next_to_launch_]) {
    launches_.push_back({next_to_launch_, during_backward});
    queue_.push_back(next_to_launch_++);
    launched = true;
  }
  if (launched) work_ready_.notify_one();
}

void DataParallel::after_backward() {
  if (group_.size() == 1) return;
  if (!thread_.joinable()) {  // no overlap: every bucket now, on this thread
    const auto start = std::chrono::steady_clock::now();
    for (size_t b = 0; b < buckets_.size(); ++b) reduce_bucket(b);
    const double took =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    reduce_seconds_ += took;
    waited_seconds_ += took;
    std::lock_guard<std::mutex> lock(mutex_);
    launches_.clear();
    for (size_t b = 0; b < buckets_.size(); ++b) launches_.push_back({b, false});
    return;
  }
  const auto start = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mutex_);
  if (!in_step_) throw std::logic_error("DataParallel::after_backward without before_forward");
  // Buckets backward did not finish (a parameter without a gradient): the
  // thread reports it when it gets there.
  std::fill(ready_.begin(), ready_.end(), true);
  launch_ready_buckets(false);
  work_done_.wait(lock, [&] { return completed_ == buckets_.size() || error_ != nullptr; });
  in_step_ = false;
  waited_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (error_) {
    std::exception_ptr error = error_;
    error_ = nullptr;
    std::rethrow_exception(error);
  }
}

std::vector<DataParallel::Launch> DataParallel::last_launches() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return launches_;
}

void DataParallel::reduce_bucket(size_t bucket) {
  average_one_bucket(parameters_, buckets_[bucket], group_, scratch_[bucket]);
}

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
