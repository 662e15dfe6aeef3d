// B3_CUDNN_CHECK(call): throws with the file, line, call, cuDNN's status and
// cuDNN's own description of the last error when a cuDNN call fails. Include
// only from CUDA-backend sources.
#pragma once

#include <cudnn.h>

#include <stdexcept>
#include <string>

namespace b3 {

[[noreturn]] inline void throw_cudnn_error(cudnnStatus_t status, const char* call, const char* file,
                                           int line) {
  std::string message = std::string(file) + ":" + std::to_string(line) + ": " + call +
                        " failed: " + cudnnGetErrorString(status);
  char details[1024] = {};
  cudnnGetLastErrorString(details, sizeof(details));  // cuDNN >= 9: what went wrong, if known
  if (details[0] != '\0') message += std::string(" (") + details + ")";
  throw std::runtime_error(message);
}

}  // namespace b3

#define B3_CUDNN_CHECK(call)                                          \
  do {                                                                \
    const cudnnStatus_t b3_status_ = (call);                          \
    if (b3_status_ != CUDNN_STATUS_SUCCESS) {                         \
      ::b3::throw_cudnn_error(b3_status_, #call, __FILE__, __LINE__); \
    }                                                                 \
  } while (0)
