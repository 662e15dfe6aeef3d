// Each CUDA device's context (tensor/cuda_context.h): stream, caching
// allocator over cudaMalloc, cuBLAS/cuDNN handles, the convolution algorithm
// cache; plus the device-level entry points declared in cuda_stream.h and
// cuda_allocator.h. The CMake glob compiles this file in every build, so it is
// empty without the CUDA backend.
#if defined(B3_WITH_CUDA)

#include "tensor/cuda_context.h"

#include <cstdlib>

#include <cstdio>
#include <stdexcept>
#include <string>

#include "tensor/cublas_check.h"
#include "tensor/cuda_check.h"
#include "tensor/cudnn_check.h"
#include "tensor/device.h"

namespace b3::cuda {

// ------------------------------------------------------------ DeviceGuard --

DeviceGuard::DeviceGuard(int device) : device_(device) {
  B3_CUDA_CHECK(cudaGetDevice(&previous_));
  if (previous_ != device_) B3_CUDA_CHECK(cudaSetDevice(device_));
}

DeviceGuard::~DeviceGuard() {
  if (previous_ != device_) {
    const cudaError_t status = cudaSetDevice(previous_);
    if (status != cudaSuccess) {
      cudaGetLastError();
      std::fprintf(stderr, "b3: DeviceGuard could not restore device %d: %s\n", previous_,
                   cudaGetErrorString(status));
    }
  }
}

// ----------------------------------------------------- ConvAlgorithmCache --

std::optional<ConvAlgorithmChoice> ConvAlgorithmCache::find(const std::string& key,
                                                            ConvPass pass) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  return it->second[static_cast<size_t>(pass)];
}

void ConvAlgorithmCache::store(const std::string& key, ConvPass pass,
                               const ConvAlgorithmChoice& choice) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_[key][static_cast<size_t>(pass)] = choice;
}

std::vector<std::pair<std::string, ConvAlgorithmCache::Choices>> ConvAlgorithmCache::entries()
    const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {entries_.begin(), entries_.end()};
}

void ConvAlgorithmCache::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.clear();
}

// --------------------------------------------------------- device memory --

namespace {

// While alive, the calling thread may make calls that a CUDA graph capture
// in global mode would otherwise refuse (cudaMalloc, cudaFree): the caching
// allocator needs a new segment now and then during a capture, as PyTorch's
// does. Nothing here is recorded into the graph.
class RelaxedCaptureMode {
 public:
  RelaxedCaptureMode() { exchange(); }
  ~RelaxedCaptureMode() { exchange(); }
  RelaxedCaptureMode(const RelaxedCaptureMode&) = delete;
  RelaxedCaptureMode& operator=(const RelaxedCaptureMode&) = delete;

 private:
  // Never throws (it runs where memory is released); a failure, which CUDA
  // documents only for an invalid mode, is reported on stderr.
  void exchange() noexcept {
    const cudaError_t status = cudaThreadExchangeStreamCaptureMode(&mode_);
    if (status != cudaSuccess) {
      cudaGetLastError();
      std::fprintf(stderr, "b3: cudaThreadExchangeStreamCaptureMode failed: %s\n",
                   cudaGetErrorString(status));
    }
  }

  cudaStreamCaptureMode mode_ = cudaStreamCaptureModeRelaxed;
};

// Segments for the caching allocator: cudaMalloc/cudaFree on one device.
class CudaMemorySource final : public MemorySource {
 public:
  explicit CudaMemorySource(int device) : device_(device) {}

  void* allocate(size_t nbytes) override {
    DeviceGuard guard(device_);
    RelaxedCaptureMode relaxed;
    void* memory = nullptr;
    const cudaError_t status = cudaMalloc(&memory, nbytes);
    if (status == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // clear the error so that later calls do not report it
      return nullptr;
    }
    if (status != cudaSuccess) {
      cudaGetLastError();
      throw_cuda_error(status, ("cudaMalloc of " + std::to_string(nbytes) + " bytes").c_str(),
                       __FILE__, __LINE__);
    }
    return memory;
  }

  void release(void* segment, size_t nbytes) noexcept override {
    int previous = 0;
    cudaGetDevice(&previous);
    cudaSetDevice(device_);
    RelaxedCaptureMode relaxed;
    const cudaError_t status = cudaFree(segment);
    if (status != cudaSuccess) {
      cudaGetLastError();
      std::fprintf(stderr, "b3: cudaFree of a %zu-byte segment on cuda:%d failed: %s\n", nbytes,
                   device_, cudaGetErrorString(status));
    }
    cudaSetDevice(previous);
  }

  std::pair<size_t, size_t> memory_info() override {
    size_t free_bytes = 0, total_bytes = 0;
    int previous = 0;
    cudaGetDevice(&previous);
    cudaSetDevice(device_);
    if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) cudaGetLastError();
    cudaSetDevice(previous);
    return {free_bytes, total_bytes};
  }

  size_t base_alignment() const override { return 256; }  // cudaMalloc's documented minimum
  std::string name() const override { return std::string("cuda:") + std::to_string(device_); }

 private:
  int device_;
};

}  // namespace

// ------------------------------------------------------------ CudaContext --

CudaContext::CudaContext(int device) : device_(device) {
  const char* trace = std::getenv("B3_SYNC_TRACE");
  trace_host_waits_ = trace != nullptr && std::string(trace) == "1";
  DeviceGuard guard(device_);
  B3_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  allocator_ = std::make_unique<CachingAllocator>(std::make_unique<CudaMemorySource>(device_));
}

bool CudaContext::compute_stream_capturing() const {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  B3_CUDA_CHECK(cudaStreamIsCapturing(stream_, &status));
  return status != cudaStreamCaptureStatusNone;
}

void CudaContext::note_host_wait(const char* what, const SourceLocation& caller) {
  if (compute_stream_capturing()) {
    throw std::logic_error(std::string("cuda:") + std::to_string(device_) + ": a host wait (" +
                           what + ") at " + caller.file_name() + ":" +
                           std::to_string(caller.line()) + " (" + caller.function_name() +
                           ") inside a CUDA graph capture; a captured step must queue its work "
                           "without waiting (tensor/cuda_graph.h)");
  }
  const uint64_t count = ++host_waits_;
  if (trace_host_waits_) {
    std::fprintf(stderr, "b3 sync trace: cuda:%d host wait %llu, %s, at %s:%u (%s)\n", device_,
                 static_cast<unsigned long long>(count), what, caller.file_name(),
                 static_cast<unsigned>(caller.line()), caller.function_name());
  }
}

CudaContext::~CudaContext() {
  // Only for contexts made outside context() (those live until the process
  // ends). Errors are ignored: there is nobody left to report them to.
  cudaSetDevice(device_);
  if (cudnn_ != nullptr) cudnnDestroy(cudnn_);
  if (cublas_ != nullptr) cublasDestroy(cublas_);
  cudaStreamSynchronize(stream_);
  cublas_workspace_ = Allocation();
  allocator_.reset();
  cudaStreamDestroy(stream_);
  cudaGetLastError();
}

void CudaContext::check_lock(const std::unique_lock<std::mutex>& lock, const char* what) const {
  if (!lock.owns_lock() || lock.mutex() != &library_mutex_) {
    throw std::logic_error(std::string("CudaContext::") + what +
                           ": call with the lock from lock_library_handles() of this context");
  }
}

cublasHandle_t CudaContext::cublas(const std::unique_lock<std::mutex>& lock, StreamHandle stream) {
  check_lock(lock, "cublas");
  DeviceGuard guard(device_);
  if (cublas_ == nullptr) {
    B3_CUBLAS_CHECK(cublasCreate(&cublas_));
    B3_CUBLAS_CHECK(cublasSetPointerMode(cublas_, CUBLAS_POINTER_MODE_HOST));
    B3_CUBLAS_CHECK(cublasSetMathMode(
        cublas_, static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH |
                                           CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
    AllocationOptions options;
    options.alignment = 256;  // cublasSetWorkspace needs 256-byte alignment
    cublas_workspace_ = allocator_->allocate(kCublasWorkspaceBytes, options, stream_);
  }
  // cublasSetStream resets the workspace to cuBLAS's own pool, so b3's
  // workspace is set again after it (and only for the compute stream, which
  // is the stream it was allocated for).
  B3_CUBLAS_CHECK(cublasSetStream(cublas_, stream));
  if (stream == stream_) {
    B3_CUBLAS_CHECK(cublasSetWorkspace(cublas_, cublas_workspace_.data, cublas_workspace_.nbytes));
  }
  return cublas_;
}

cudnnHandle_t CudaContext::cudnn(const std::unique_lock<std::mutex>& lock, StreamHandle stream) {
  check_lock(lock, "cudnn");
  DeviceGuard guard(device_);
  if (cudnn_ == nullptr) B3_CUDNN_CHECK(cudnnCreate(&cudnn_));
  B3_CUDNN_CHECK(cudnnSetStream(cudnn_, stream));
  return cudnn_;
}

CudaContext& context(int device) {
  // Never destroyed (see the header): a leaked vector of leaked contexts.
  static std::mutex* const mutex = new std::mutex;
  static std::vector<CudaContext*>* const contexts = new std::vector<CudaContext*>;
  std::lock_guard<std::mutex> lock(*mutex);
  static const int device_count = cuda_device_count();
  if (device < 0 || device >= device_count) {
    throw std::invalid_argument("cuda::context: asked for cuda:" + std::to_string(device) +
                                ", but this machine has " + std::to_string(device_count) +
                                " usable CUDA device(s)");
  }
  if (contexts->empty()) contexts->resize(static_cast<size_t>(device_count), nullptr);
  CudaContext*& slot = (*contexts)[static_cast<size_t>(device)];
  if (slot == nullptr) slot = new CudaContext(device);
  return *slot;
}

// ------------------------------------- entry points of cuda_stream.h etc. --

Stream compute_stream(int device) { return context(device).stream(); }

void synchronize(const Stream& stream, SourceLocation caller) {
  context(stream.device).note_host_wait("stream synchronize", caller);
  DeviceGuard guard(stream.device);
  B3_CUDA_CHECK(cudaStreamSynchronize(stream.handle));
}

uint64_t host_wait_count(int device) { return context(device).host_waits(); }

MemoryStats memory_stats(int device) { return context(device).allocator().stats(); }
void reset_peak_memory(int device) { context(device).allocator().reset_peak(); }
void clear_cache(int device) {
  CudaContext& ctx = context(device);
  // cudaFree would synchronize anyway; doing it first makes the order explicit.
  synchronize(ctx.stream());
  ctx.allocator().clear_cache();
}

}  // namespace b3::cuda

#endif  // B3_WITH_CUDA
