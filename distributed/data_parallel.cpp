// Bucketing, broadcasts, gradient averaging, checksums and the settings check
// of data-parallel training (distributed/data_parallel.h).
#include "distributed/data_parallel.h"

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

template <typename T>
void average_bucket(const std::vector<Tensor>& grads, ProcessGroup& group) {
  int64_t total = 0;
  for (const Tensor& g : grads) total += g.numel();
  std::vector<T> flat(static_cast<size_t>(total));
  std::vector<Tensor> hosts;
  int64_t offset = 0;
  for (const Tensor& g : grads) {
    hosts.push_back(host_dense(g));
    std::memcpy(flat.data() + offset, hosts.back().data_ptr(),
                static_cast<size_t>(g.numel()) * sizeof(T));
    offset += g.numel();
  }
  group.all_reduce_sum(flat.data(), flat.size());
  const T world = static_cast<T>(group.size());
  for (T& v : flat) v /= world;  // DDP's mean: the sum divided by the world size
  offset = 0;
  for (size_t i = 0; i < grads.size(); ++i) {
    std::memcpy(hosts[i].data_ptr(), flat.data() + offset,
                static_cast<size_t>(grads[i].numel()) * sizeof(T));
    Tensor g = grads[i];
    write_back(g, hosts[i]);
    offset += grads[i].numel();
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
  for (const GradientBucket& bucket : buckets) {
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
    if (grads.empty()) continue;
    switch (grads.front().dtype()) {
      case DType::f32: average_bucket<float>(grads, group); break;
      case DType::f64: average_bucket<double>(grads, group); break;
      default:
        throw std::runtime_error(std::string("data parallel: cannot average ") +
                                 dtype_name(grads.front().dtype()) + " gradients");
    }
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

DataParallel::DataParallel(Module& model, ProcessGroup& group, size_t bucket_bytes)
    : group_(group), parameters_(model.parameters()) {
  for (const auto& [name, b] : model.named_buffers()) buffers_.push_back(b);
  buckets_ = make_gradient_buckets(parameters_, bucket_bytes);
  broadcast_tensors(parameters_, group_);
  broadcast_tensors(buffers_, group_);
}

void DataParallel::before_forward() {
  const auto start = std::chrono::steady_clock::now();
  broadcast_tensors(buffers_, group_);
  communication_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void DataParallel::after_backward() {
  const auto start = std::chrono::steady_clock::now();
  average_gradients(parameters_, buckets_, group_);
  communication_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace b3::dist
