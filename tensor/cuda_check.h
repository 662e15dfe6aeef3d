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
