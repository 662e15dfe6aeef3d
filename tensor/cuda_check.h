// B3_CUDA_CHECK(call): throws with the file, line, call and CUDA's message when
// a CUDA runtime call fails. Include only from CUDA-backend sources.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace b3 {

[[noreturn]] inline void throw_cuda_error(cudaError_t status, const char* call, const char* file,
                                          int line) {
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + call +
                           " failed: " + cudaGetErrorString(status));
}

}  // namespace b3

#define B3_CUDA_CHECK(call)                                          \
  do {                                                               \
    const cudaError_t b3_status_ = (call);                           \
    if (b3_status_ != cudaSuccess) {                                 \
      cudaGetLastError();                                            \
      ::b3::throw_cuda_error(b3_status_, #call, __FILE__, __LINE__); \
    }                                                                \
  } while (0)

// B3_CUDA_CHECK_LAUNCH(name): after a kernel launch, throws with the file,
// line and kernel name if the launch failed (bad configuration, no kernel
// image for this GPU). Errors while the kernel runs surface at a later
// synchronizing call; run with CUDA_LAUNCH_BLOCKING=1 to pin them to their
// launch.
#define B3_CUDA_CHECK_LAUNCH(name)                                               \
  do {                                                                           \
    const cudaError_t b3_status_ = cudaGetLastError();                           \
    if (b3_status_ != cudaSuccess) {                                             \
      ::b3::throw_cuda_error(b3_status_, "launch of " name, __FILE__, __LINE__); \
    }                                                                            \
  } while (0)
