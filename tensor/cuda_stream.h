// What every CUDA launcher in b3 takes: the stream to enqueue on and the
// device that stream belongs to, passed explicitly. There is no "current
// stream" inside b3's kernels; the caller decides where work goes.
//
// This header compiles in every build and includes no CUDA header, so code
// that calls the CUDA launchers (the ops' dispatch, the tests) compiles in a
// CPU-only build as well. B3_CUDA_LAUNCHER makes that work:
//   - with the CUDA backend (B3_WITH_CUDA) it is the plain declaration, and the
//     definition lives in a .cu/.cpp file that only the CUDA build compiles;
//   - without it, it defines the function inline to throw "built without CUDA",
//     so a CPU-only binary links, and fails clearly if it ever gets there.
//     Usage:  B3_CUDA_LAUNCHER(void relu_forward(const float* x, float* y,
//                                                int64_t n, const Stream& stream));
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "tensor/source_location.h"

struct CUstream_st;  // CUDA's opaque stream type: cudaStream_t is CUstream_st*

namespace b3::cuda {

using StreamHandle = ::CUstream_st*;

// A CUDA stream and its device. handle == nullptr is CUDA's legacy default
// stream; b3's own work goes to the per-device compute stream
// (compute_stream() below), which is non-blocking so that a CUDA graph can
// capture it later.
struct Stream {
  int device = 0;
  StreamHandle handle = nullptr;
};

[[noreturn]] inline void throw_built_without_cuda(const char* what) {
  throw std::runtime_error(std::string(what) +
                           ": b3 was built without CUDA (configure with -DB3_CUDA=ON on a "
                           "machine with the CUDA toolkit and cuDNN)");
}

}  // namespace b3::cuda

#if defined(B3_WITH_CUDA)
#define B3_CUDA_LAUNCHER(signature) signature
#else
#define B3_CUDA_LAUNCHER(signature)                                               \
  _Pragma("GCC diagnostic push")                                                  \
      _Pragma("GCC diagnostic ignored \"-Wunused-parameter\"") inline signature { \
    ::b3::cuda::throw_built_without_cuda(__func__);                               \
  }                                                                               \
  _Pragma("GCC diagnostic pop")
#endif

namespace b3::cuda {

// The compute stream of `device`: created with the device's CudaContext
// (tensor/cuda_context.h) on first use, non-blocking, never destroyed. Tensor
// storage on `device` is allocated for this stream, and host<->device copies
// of tensors are ordered on it.
B3_CUDA_LAUNCHER(Stream compute_stream(int device));

// Blocks the calling host thread until all work queued on `stream` is done;
// throws (with the CUDA error) if any of it failed. Counts as a host wait.
B3_CUDA_LAUNCHER(void synchronize(const Stream& stream,
                                  SourceLocation caller = SourceLocation::current()));

// Host waits: each time b3 blocks the host until a device's work is done
// (synchronize(), a copy between host and device memory) counts one on that
// device, so a test can assert that a training step queues work without ever
// waiting (tests/test_cuda_step.cpp). With B3_SYNC_TRACE=1 in the
// environment each wait is also printed to stderr with the file, line and
// function that asked for it. This is the number since the process started.
B3_CUDA_LAUNCHER(uint64_t host_wait_count(int device));

}  // namespace b3::cuda
