// NcclCommunicator over NCCL (distributed/nccl_communicator.h): the
// communicator, its stream and events, and the watchdog. Built only with
// B3_WITH_NCCL; every CUDA and NCCL call is checked.
#include "distributed/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "tensor/cuda_check.h"
#include "tensor/cuda_stream.h"

namespace b3::dist {

namespace {

[[noreturn]] void throw_nccl_error(ncclResult_t status, ncclComm_t comm, const char* call,
                                   const char* file, int line) {
  std::string detail = ncclGetErrorString(status);
  if (comm != nullptr) {
    const char* last = ncclGetLastError(comm);
    if (last != nullptr && *last != '\0') detail += " (" + std::string(last) + ")";
  }
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + call +
                           " failed: " + detail);
}

#define B3_NCCL_CHECK(comm, call)                                           \
  do {                                                                      \
    const ncclResult_t b3_nccl_status_ = (call);                            \
    if (b3_nccl_status_ != ncclSuccess)                                     \
      throw_nccl_error(b3_nccl_status_, (comm), #call, __FILE__, __LINE__); \
  } while (0)

ncclDataType_t nccl_type(DType dtype, const char* op) {
  switch (dtype) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::f16: return ncclFloat16;
    case DType::i32: return ncclInt32;
    case DType::i64: return ncclInt64;
    case DType::u8: return ncclUint8;
  }
  throw std::invalid_argument(std::string(op) + ": no NCCL type for " + dtype_name(dtype));
}

using Clock = std::chrono::steady_clock;

}  // namespace

struct NcclCommunicator::State {
  ProcessGroup& bootstrap;
  int device = 0;
  int rank = 0, size = 1;
  double timeout_seconds = kDefaultNcclTimeoutSeconds;
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;          // the collectives' own stream
  cudaEvent_t compute_reached = nullptr;  // recorded on the compute stream before a collective
  cudaEvent_t collectives_done = nullptr;

  // The watchdog's view: collectives queued and not yet seen finished.
  struct InFlight {
    cudaEvent_t done = nullptr;
    Clock::time_point queued;
    std::string what;
  };
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<InFlight> in_flight;
  std::vector<cudaEvent_t> spare_events;
  bool stopping = false;
  std::thread watchdog;

  explicit State(ProcessGroup& group) : bootstrap(group) {}

  cudaStream_t compute() const { return cuda::compute_stream(device).handle; }

  // After a collective was queued on `stream`: an event the watchdog follows.
  void track(const std::string& what) {
    cudaEvent_t done = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (!spare_events.empty()) {
        done = spare_events.back();
        spare_events.pop_back();
      }
    }
    if (done == nullptr) B3_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    B3_CUDA_CHECK(cudaEventRecord(done, stream));
    {
      std::lock_guard<std::mutex> lock(mutex);
      in_flight.push_back({done, Clock::now(), what});
    }
    wake.notify_one();
  }

  // The first work a collective waits for: everything on the compute stream.
  void follow_compute() {
    B3_CUDA_CHECK(cudaSetDevice(device));
    B3_CUDA_CHECK(cudaEventRecord(compute_reached, compute()));
    B3_CUDA_CHECK(cudaStreamWaitEvent(stream, compute_reached, 0));
  }

  // A collective that cannot finish: say which, abort NCCL, end the job.
  [[noreturn]] void fail(const std::string& why) {
    std::fprintf(stderr, "b3 (rank %d of %d): error: NCCL on cuda:%d: %s; aborting the job\n", rank,
                 size, device, why.c_str());
    std::fflush(stderr);
    ncclCommAbort(comm);  // unchecked: the job ends either way
    bootstrap.abort(1);
    std::abort();  // not reached (abort() does not return; the compiler cannot see it through the
                   // virtual call)
  }

  void watch() {
    if (cudaSetDevice(device) != cudaSuccess) fail("cudaSetDevice failed in the watchdog");
    std::unique_lock<std::mutex> lock(mutex);
    while (true) {
      wake.wait_for(lock, std::chrono::milliseconds(100));
      if (stopping) return;
      while (!in_flight.empty()) {
        const cudaError_t state = cudaEventQuery(in_flight.front().done);
        if (state == cudaErrorNotReady) break;
        if (state != cudaSuccess)
          fail(in_flight.front().what + " failed: " + cudaGetErrorString(state));
        spare_events.push_back(in_flight.front().done);
        in_flight.pop_front();
      }
      ncclResult_t async = ncclSuccess;
      if (ncclCommGetAsyncError(comm, &async) != ncclSuccess ||
          (async != ncclSuccess && async != ncclInProgress)) {
        fail(std::string("asynchronous error: ") + ncclGetErrorString(async));
      }
      if (!in_flight.empty()) {
        const double waited =
            std::chrono::duration<double>(Clock::now() - in_flight.front().queued).count();
        if (waited > timeout_seconds) {
          fail(in_flight.front().what + " did not finish within " +
               std::to_string(timeout_seconds) +
               " s (another rank stopped, hangs, or called a different collective)");
        }
      }
    }
  }
};

bool built_with_nccl() { return true; }

NcclCommunicator::NcclCommunicator(ProcessGroup& bootstrap, int device, double timeout_seconds)
    : state_(std::make_unique<State>(bootstrap)) {
  State& s = *state_;
  if (!(timeout_seconds > 0)) throw std::invalid_argument("NcclCommunicator: timeout must be > 0");
  s.device = device;
  s.rank = bootstrap.rank();
  s.size = bootstrap.size();
  s.timeout_seconds = timeout_seconds;
  ncclUniqueId id{};
  if (s.rank == 0) B3_NCCL_CHECK(nullptr, ncclGetUniqueId(&id));
  bootstrap.broadcast(&id, sizeof id, 0);
  B3_CUDA_CHECK(cudaSetDevice(device));
  B3_NCCL_CHECK(nullptr, ncclCommInitRank(&s.comm, s.size, id, s.rank));
  B3_CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
  B3_CUDA_CHECK(cudaEventCreateWithFlags(&s.compute_reached, cudaEventDisableTiming));
  B3_CUDA_CHECK(cudaEventCreateWithFlags(&s.collectives_done, cudaEventDisableTiming));
  s.watchdog = std::thread([&s] { s.watch(); });
}

NcclCommunicator::~NcclCommunicator() {
  State& s = *state_;
  // Let the collectives in flight finish (the buffers they use are freed
  // after this), but never wait past the timeout: then abort instead.
  const Clock::time_point start = Clock::now();
  bool finished = false;
  while (true) {
    const cudaError_t state = cudaStreamQuery(s.stream);
    if (state != cudaErrorNotReady) {
      finished = state == cudaSuccess;
      break;
    }
    if (std::chrono::duration<double>(Clock::now() - start).count() > s.timeout_seconds) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    s.stopping = true;
  }
  s.wake.notify_all();
  if (s.watchdog.joinable()) s.watchdog.join();
  // Destructors do not throw: failures here are reported and passed over.
  if (finished) {
    if (ncclCommDestroy(s.comm) != ncclSuccess)
      std::fprintf(stderr, "b3: warning: ncclCommDestroy failed\n");
  } else {
    ncclCommAbort(s.comm);
  }
  for (const auto& f : s.in_flight) cudaEventDestroy(f.done);
  for (cudaEvent_t e : s.spare_events) cudaEventDestroy(e);
  cudaEventDestroy(s.compute_reached);
  cudaEventDestroy(s.collectives_done);
  cudaStreamDestroy(s.stream);
}

int NcclCommunicator::rank() const { return state_->rank; }
int NcclCommunicator::size() const { return state_->size; }
int NcclCommunicator::device() const { return state_->device; }

static void check_on_device(const Tensor& t, int device, const char* op) {
  if (!t.device().is_cuda() || t.device().index != device || !t.is_dense()) {
    throw std::invalid_argument(std::string(op) + ": " + t.str() +
                                " must be a dense tensor on cuda:" + std::to_string(device));
  }
}

void NcclCommunicator::all_reduce_mean(Tensor& flat) {
  State& s = *state_;
  check_on_device(flat, s.device, "NcclCommunicator::all_reduce_mean");
  if (!is_floating(flat.dtype()))
    throw std::invalid_argument("NcclCommunicator::all_reduce_mean: " + flat.str() +
                                " is not floating point");
  s.follow_compute();
  B3_NCCL_CHECK(
      s.comm, ncclAllReduce(flat.data_ptr(), flat.data_ptr(), static_cast<size_t>(flat.numel()),
                            nccl_type(flat.dtype(), "all_reduce_mean"), ncclAvg, s.comm, s.stream));
  s.track("all-reduce of " + std::to_string(flat.numel()) + " elements");
}

void NcclCommunicator::broadcast(const std::vector<Tensor>& tensors, int root) {
  State& s = *state_;
  if (root < 0 || root >= s.size)
    throw std::invalid_argument("NcclCommunicator::broadcast: root " + std::to_string(root) +
                                " is not a rank of " + std::to_string(s.size));
  if (tensors.empty()) return;
  for (const Tensor& t : tensors) check_on_device(t, s.device, "NcclCommunicator::broadcast");
  s.follow_compute();
  B3_NCCL_CHECK(s.comm, ncclGroupStart());
  for (const Tensor& t : tensors) {
    Tensor target = t;
    const ncclResult_t status =
        ncclBroadcast(target.data_ptr(), target.data_ptr(), static_cast<size_t>(target.numel()),
                      nccl_type(target.dtype(), "broadcast"), root, s.comm, s.stream);
    if (status != ncclSuccess) {
      ncclGroupEnd();
      throw_nccl_error(status, s.comm, "ncclBroadcast", __FILE__, __LINE__);
    }
  }
  B3_NCCL_CHECK(s.comm, ncclGroupEnd());
  s.track("broadcast of " + std::to_string(tensors.size()) + " tensors");
}

void NcclCommunicator::compute_waits() {
  State& s = *state_;
  B3_CUDA_CHECK(cudaSetDevice(s.device));
  B3_CUDA_CHECK(cudaEventRecord(s.collectives_done, s.stream));
  B3_CUDA_CHECK(cudaStreamWaitEvent(s.compute(), s.collectives_done, 0));
}

}  // namespace b3::dist
