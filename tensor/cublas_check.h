// B3_CUBLAS_CHECK(call): throws with the file, line, call and cuBLAS's status
// name when a cuBLAS call fails. Include only from CUDA-backend sources.
#pragma once

#include <cublas_v2.h>

#include <stdexcept>
#include <string>

namespace b3 {

[[noreturn]] inline void throw_cublas_error(cublasStatus_t status, const char* call,
                                            const char* file, int line) {
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + call +
                           " failed: " + cublasGetStatusName(status) + " (" +
                           cublasGetStatusString(status) + ")");
}

}  // namespace b3

#define B3_CUBLAS_CHECK(call)                                          \
  do {                                                                 \
    const cublasStatus_t b3_status_ = (call);                          \
    if (b3_status_ != CUBLAS_STATUS_SUCCESS) {                         \
      ::b3::throw_cublas_error(b3_status_, #call, __FILE__, __LINE__); \
    }                                                                  \
  } while (0)
