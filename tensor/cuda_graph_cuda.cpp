// The CUDA graph launchers of tensor/cuda_graph.h: stream capture on a
// device's compute stream with the caching allocator's private pool, graph
// instantiation, launch and destruction, and the random-key slots handed to
// ops during a capture. CUDA builds only.
#include <cuda_runtime.h>

#include <cstdio>
#include <stdexcept>
#include <string>

#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cuda_graph.h"

namespace b3::cuda {

uint64_t begin_stream_capture(int device, GraphRandomKeys* keys) {
  CudaContext& ctx = context(device);
  if (ctx.capturing_keys() != nullptr || ctx.compute_stream_capturing()) {
    throw std::logic_error("CudaGraph::capture_begin: cuda:" + std::to_string(device) +
                           "'s compute stream is being captured already");
  }
  const StreamHandle stream = ctx.stream().handle;
  const uint64_t pool = ctx.allocator().begin_private_pool(stream);
  DeviceGuard guard(device);
  const cudaError_t status = cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal);
  if (status != cudaSuccess) {
    cudaGetLastError();
    ctx.allocator().end_private_pool(stream);
    ctx.allocator().release_private_pool(pool);
    throw_cuda_error(status, "cudaStreamBeginCapture", __FILE__, __LINE__);
  }
  ctx.set_capturing_keys(keys);
  return pool;
}

GraphExecHandle end_stream_capture(int device, bool instantiate) {
  CudaContext& ctx = context(device);
  const StreamHandle stream = ctx.stream().handle;
  DeviceGuard guard(device);
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  ctx.set_capturing_keys(nullptr);
  ctx.allocator().end_private_pool(stream);
  if (ended != cudaSuccess) cudaGetLastError();
  if (!instantiate || ended != cudaSuccess) {  // nothing to instantiate: drop what was recorded
    if (graph != nullptr && cudaGraphDestroy(graph) != cudaSuccess) cudaGetLastError();
  }
  if (!instantiate) return nullptr;
  if (ended != cudaSuccess) {
    throw_cuda_error(ended,
                     "cudaStreamEndCapture (the capture was invalidated: a call that is not "
                     "allowed during stream capture ran on some thread)",
                     __FILE__, __LINE__);
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
  const cudaError_t destroyed = cudaGraphDestroy(graph);  // the executable graph is independent
  if (made != cudaSuccess) {
    cudaGetLastError();
    throw_cuda_error(made, "cudaGraphInstantiate", __FILE__, __LINE__);
  }
  if (destroyed != cudaSuccess) {
    cudaGetLastError();
    cudaGraphExecDestroy(exec);
    throw_cuda_error(destroyed, "cudaGraphDestroy", __FILE__, __LINE__);
  }
  return exec;
}

void launch_graph(GraphExecHandle graph, const Stream& stream) {
  if (graph == nullptr) throw std::invalid_argument("cuda::launch_graph: the graph is null");
  DeviceGuard guard(stream.device);
  B3_CUDA_CHECK(cudaGraphLaunch(graph, stream.handle));
}

void destroy_graph(GraphExecHandle graph, int device, uint64_t pool) {
  try {
    CudaContext& ctx = context(device);
    DeviceGuard guard(device);
    if (graph != nullptr) {
      // A replay still in flight completes first; its memory is then reused
      // only by work queued after it on the same compute stream.
      const cudaError_t status = cudaGraphExecDestroy(graph);
      if (status != cudaSuccess) {
        cudaGetLastError();
        std::fprintf(stderr, "b3: cudaGraphExecDestroy on cuda:%d failed: %s\n", device,
                     cudaGetErrorString(status));
      }
    }
    if (pool != 0) ctx.allocator().release_private_pool(pool);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "b3: releasing a CUDA graph on cuda:%d failed: %s\n", device, e.what());
  }
}

const uint64_t* capture_random_key(int device, Generator& gen) {
  GraphRandomKeys* keys = context(device).capturing_keys();
  if (keys == nullptr) return nullptr;
  if (keys->generators.size() >= static_cast<size_t>(GraphRandomKeys::kCapacity)) {
    throw std::runtime_error("CUDA graph capture on cuda:" + std::to_string(device) +
                             ": more than " + std::to_string(GraphRandomKeys::kCapacity) +
                             " random draws (dropout calls) in one captured step");
  }
  keys->generators.push_back(&gen);
  return keys->slot_pointer(keys->generators.size() - 1);
}

}  // namespace b3::cuda
