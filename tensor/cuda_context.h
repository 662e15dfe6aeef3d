// CudaContext: the resources b3 keeps for one CUDA device (its compute
// stream, caching allocator, cuBLAS and cuDNN handles and the cache of cuDNN's
// convolution algorithm choices), and context(device), which hands out the
// one context of each device.
//
// Why this is the one place with process-wide state: these are per-process
// resources, like the CUDA driver's own context for the device. Two
// allocators on one device would each cache memory the other cannot use; two
// algorithm caches would benchmark every convolution twice; handles are
// expensive to create. So each device gets exactly one context, created on
// first use (thread-safe) and never destroyed: tearing CUDA objects down
// during static destruction, after the CUDA runtime may already be unloading,
// is a classic source of crashes at exit, and the driver reclaims everything
// when the process ends anyway.
//
// What is NOT here: a "current stream". Every launcher takes its Stream
// explicitly (tensor/cuda_stream.h); the context only owns the default
// compute stream that tensor storage and copies use.
//
// CUDA-backend only: this header includes the CUDA, cuBLAS and cuDNN headers.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cudnn.h>
#include <atomic>
#include <cstdint>

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "tensor/cuda_allocator.h"
#include "tensor/cuda_stream.h"
#include "tensor/source_location.h"

namespace b3::cuda {

struct GraphRandomKeys;  // tensor/cuda_graph.h

// Makes `device` the calling thread's current CUDA device for the guard's
// lifetime, then restores the previous one. Launchers use it because a stream
// only accepts work from a thread whose current device is the stream's.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int device_ = 0;
  int previous_ = 0;
};

// The three cuDNN convolution passes, each with its own algorithm choice.
enum class ConvPass { forward = 0, backward_data = 1, backward_filter = 2 };

// cuDNN's algorithm for one pass of one convolution shape.
struct ConvAlgorithmChoice {
  int algorithm = -1;  // a cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t
  cudnnMathType_t math_type = CUDNN_DEFAULT_MATH;  // must be set on the descriptor
  size_t workspace_bytes = 0;
  float time_ms = -1.0f;  // measured by cudnnFind*, or -1 for a heuristic choice
};

// The algorithms chosen per convolution key (layers/conv2d_cuda.cpp builds
// the key, a readable description of shape, dtype, layout and search mode).
// Thread-safe.
class ConvAlgorithmCache {
 public:
  using Choices = std::array<std::optional<ConvAlgorithmChoice>, 3>;  // indexed by ConvPass

  std::optional<ConvAlgorithmChoice> find(const std::string& key, ConvPass pass) const;
  void store(const std::string& key, ConvPass pass, const ConvAlgorithmChoice& choice);
  std::vector<std::pair<std::string, Choices>> entries() const;  // sorted by key
  void clear();

 private:
  mutable std::mutex mutex_;
  std::map<std::string, Choices> entries_;
};

class CudaContext {
 public:
  explicit CudaContext(int device);
  ~CudaContext();
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  int device() const { return device_; }
  // The compute stream (non-blocking: it does not wait for the legacy default
  // stream, so a CUDA graph can capture it).
  Stream stream() const { return Stream{device_, stream_}; }
  CachingAllocator& allocator() { return *allocator_; }
  ConvAlgorithmCache& conv_algorithms() { return conv_algorithms_; }

  // cuBLAS and cuDNN handles must not be used by two threads at once. Take
  // this lock, then ask for the handle bound to the stream you launch on;
  // keep the lock until the library call has been made.
  std::unique_lock<std::mutex> lock_library_handles() {
    return std::unique_lock<std::mutex>(library_mutex_);
  }
  // The cuBLAS handle (created on first use: pointer mode host, math mode
  // default with reduced-precision reductions disallowed, so f16 GEMMs
  // accumulate in f32 all the way), bound to `stream`; on the compute stream
  // it uses a fixed workspace from the caching allocator (what CUDA graph
  // capture wants). `lock` must come from lock_library_handles().
  cublasHandle_t cublas(const std::unique_lock<std::mutex>& lock, StreamHandle stream);
  // The cuDNN handle (created on first use), bound to `stream`.
  cudnnHandle_t cudnn(const std::unique_lock<std::mutex>& lock, StreamHandle stream);

  // Counts one host wait for this device (see host_wait_count() in
  // tensor/cuda_stream.h) and, with B3_SYNC_TRACE=1, prints it: `what` is
  // the kind of wait, `caller` where it was asked for. Call it before the
  // wait: while a CUDA graph captures the compute stream it throws
  // std::logic_error instead (a capture cannot contain a host wait).
  void note_host_wait(const char* what, const SourceLocation& caller);

  // Whether every convolution must use a deterministic cuDNN algorithm
  // (layers/conv2d_cuda.h's set_deterministic_convolutions).
  bool deterministic_convolutions() const { return deterministic_convolutions_.load(); }
  void set_deterministic_convolutions(bool on) { deterministic_convolutions_.store(on); }

  // The random-key slots of the CUDA graph capturing the compute stream now
  // (tensor/cuda_graph.h), or nullptr when none is.
  GraphRandomKeys* capturing_keys() const { return capturing_keys_; }
  void set_capturing_keys(GraphRandomKeys* keys) { capturing_keys_ = keys; }
  // Whether the compute stream is being captured (asks CUDA).
  bool compute_stream_capturing() const;
  uint64_t host_waits() const { return host_waits_.load(); }

  static constexpr size_t kCublasWorkspaceBytes = 32u << 20;  // cuBLAS's advice for Hopper

 private:
  void check_lock(const std::unique_lock<std::mutex>& lock, const char* what) const;

  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  std::atomic<uint64_t> host_waits_{0};
  bool trace_host_waits_ = false;  // B3_SYNC_TRACE=1 when the context was made
  GraphRandomKeys* capturing_keys_ = nullptr;
  std::atomic<bool> deterministic_convolutions_{false};
  std::unique_ptr<CachingAllocator> allocator_;
  ConvAlgorithmCache conv_algorithms_;
  std::mutex library_mutex_;
  cublasHandle_t cublas_ = nullptr;
  Allocation cublas_workspace_;  // declared after allocator_: released before it
  cudnnHandle_t cudnn_ = nullptr;
};

// The context of `device` (0 <= device < cuda_device_count()), created on
// first use. Throws std::invalid_argument for an index with no device.
CudaContext& context(int device);

}  // namespace b3::cuda
