// CudaGraph: work queued on a device's compute stream, recorded once and
// replayed with one launch (cudaStreamBeginCapture, cudaGraphInstantiate,
// cudaGraphLaunch), as torch.cuda.CUDAGraph. A training step is a few
// hundred kernels; replaying it as one graph removes the host's per-kernel
// launch cost, which at small batches is most of a step.
//
//   CudaGraph graph(device);
//   graph.capture_begin();
//   ... queue work on compute_stream(device): recorded, not run ...
//   graph.capture_end();            // instantiates
//   graph.replay();                 // runs it; again and again
//
// What a replay needs, and where b3 provides it:
//   - The same addresses: a replay runs each kernel on the pointers it had at
//     capture. During the capture every allocation on the compute stream comes
//     from a private pool of the caching allocator (tensor/cuda_allocator.h)
//     that nothing else may use while the graph exists, so memory the graph
//     reads or writes is never handed to anyone else.
//   - Inputs in fixed buffers: the caller copies new data into tensors made
//     before the capture (train/graphed_step.h does this for batches).
//   - Nothing decided on the host: a capture records kernels, not host code,
//     so a value that changes from step to step must live on the device (the
//     optimizers' step counts and the loss scale do). A host wait during a
//     capture (a synchronization, a copy to or from the host) throws
//     std::logic_error naming the caller, and the capture is abandoned.
//   - Fresh random numbers at each replay: an op that draws (dropout) asks
//     capture_random_key() for a device slot instead of drawing on the host;
//     before every replay the graph draws the next 64-bit key from each such
//     Generator, in the order of the capture, and writes them to their slots
//     (one small kernel whose arguments carry the keys). So N replays draw
//     exactly what N eager steps draw: the same masks, bit for bit. Those
//     Generators must outlive the graph.
// The capture mode is cudaStreamCaptureModeGlobal (PyTorch's default): while
// it runs, another thread's unsafe CUDA call (cudaMalloc outside b3's
// allocator, a synchronization) fails instead of silently breaking the graph.
// b3's allocator switches its own thread to relaxed mode around cudaMalloc and
// cudaFree.
//
// This header compiles in every build and includes no CUDA header; the CUDA
// calls are the launchers below (tensor/cuda_graph_cuda.cpp, CUDA builds),
// which throw "built without CUDA" in a CPU-only build.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "tensor/allocator.h"
#include "tensor/cuda_stream.h"
#include "tensor/random.h"

struct CUgraphExec_st;  // CUDA's opaque executable graph: cudaGraphExec_t

namespace b3::cuda {

using GraphExecHandle = ::CUgraphExec_st*;

// The random-number slots of one capture: a device array of 64-bit keys and
// the Generator each slot's key is drawn from before every replay.
struct GraphRandomKeys {
  static constexpr int kCapacity = 64;  // dropout layers per captured step, at most

  int device = 0;
  Allocation slots;                    // kCapacity uint64 on the device
  std::vector<Generator*> generators;  // slot i is drawn from generators[i]

  uint64_t* slot_pointer(size_t i) const { return static_cast<uint64_t*>(slots.data) + i; }
};

// Starts capturing `device`'s compute stream: its allocations go to a new
// private pool (returned), and capture_random_key() hands out slots of `keys`
// until end_stream_capture(). Throws if a capture of this device is running.
B3_CUDA_LAUNCHER(uint64_t begin_stream_capture(int device, GraphRandomKeys* keys));
// Ends the capture begun on `device`. With `instantiate`, returns the
// executable graph (std::runtime_error with CUDA's message when the capture
// was invalidated, e.g. by an unsafe call); without, discards what was
// captured and returns nullptr (for abandoning a capture after an error;
// never throws then).
B3_CUDA_LAUNCHER(GraphExecHandle end_stream_capture(int device, bool instantiate));
// Queues one replay of `graph` on `stream`.
B3_CUDA_LAUNCHER(void launch_graph(GraphExecHandle graph, const Stream& stream));
// Destroys `graph` (a replay still running finishes first, as CUDA
// specifies) and gives its private pool back to the caching allocator. Never
// throws: a failure is reported on stderr.
B3_CUDA_LAUNCHER(void destroy_graph(GraphExecHandle graph, int device, uint64_t pool));
// During a capture of `device`: registers `gen` and returns the device slot
// its key will be in at each replay. Outside a capture: nullptr (the op draws
// its key from `gen` itself). Throws when a capture runs out of slots.
B3_CUDA_LAUNCHER(const uint64_t* capture_random_key(int device, Generator& gen));
// Queues slots[i] = values[i] for i < n (n <= GraphRandomKeys::kCapacity) on
// `stream`; the values travel in the kernel's arguments, so nothing is copied
// from host memory and nothing waits.
B3_CUDA_LAUNCHER(void write_random_keys(const uint64_t* values, int n, uint64_t* slots,
                                        const Stream& stream));

class CudaGraph {
 public:
  explicit CudaGraph(int device) : device_(device) {}
  ~CudaGraph() { reset(); }
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  int device() const { return device_; }
  bool captured() const { return exec_ != nullptr; }
  // The random keys the graph draws before each replay.
  size_t random_keys() const { return keys_.generators.size(); }

  // Starts recording the compute stream. Call once per graph.
  void capture_begin() {
    if (captured() || capturing_ || pool_ != 0) {
      throw std::logic_error("CudaGraph::capture_begin: this graph was captured already");
    }
    keys_.device = device_;
    AllocationOptions options;
    options.alignment = 256;
    keys_.slots = allocate_cuda(GraphRandomKeys::kCapacity * sizeof(uint64_t), device_, options);
    pool_ = begin_stream_capture(device_, &keys_);
    capturing_ = true;
  }

  // Stops recording and instantiates the graph.
  void capture_end() {
    if (!capturing_) throw std::logic_error("CudaGraph::capture_end: no capture_begin before");
    capturing_ = false;
    exec_ = end_stream_capture(device_, true);
  }

  // Ends a capture that failed part-way (an exception inside it) and drops
  // what it recorded. Safe to call when no capture runs.
  void abandon_capture() noexcept {
    if (!capturing_) return;
    capturing_ = false;
    try {
      end_stream_capture(device_, false);
    } catch (...) {  // not expected (it reports on stderr); nothing more to do
    }
  }

  // Draws this replay's random keys, writes them, then launches the graph,
  // all queued on the compute stream.
  void replay() {
    if (!captured()) throw std::logic_error("CudaGraph::replay: the graph has not been captured");
    const Stream stream = compute_stream(device_);
    if (!keys_.generators.empty()) {
      std::vector<uint64_t> values;
      values.reserve(keys_.generators.size());
      for (Generator* gen : keys_.generators) values.push_back(gen->next_u64());
      write_random_keys(values.data(), static_cast<int>(values.size()), keys_.slot_pointer(0),
                        stream);
    }
    launch_graph(exec_, stream);
  }

 private:
  void reset() noexcept {
    abandon_capture();
    if (exec_ != nullptr || pool_ != 0)
      destroy_graph(std::exchange(exec_, nullptr), device_, pool_);
    pool_ = 0;
  }

  int device_ = 0;
  bool capturing_ = false;
  uint64_t pool_ = 0;
  GraphExecHandle exec_ = nullptr;
  GraphRandomKeys keys_;
};

}  // namespace b3::cuda
