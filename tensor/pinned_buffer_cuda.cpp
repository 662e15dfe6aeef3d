// The CUDA side of tensor/pinned_buffer.h: page-locked host memory, events,
// and asynchronous host-to-device copies. Every CUDA call is checked with
// B3_CUDA_CHECK (file, line, call, CUDA's message); the release functions,
// which run in destructors, report a failure on stderr instead of throwing.
#include <cuda_runtime.h>

#include <iostream>
#include <stdexcept>
#include <string>

#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/pinned_buffer.h"

namespace b3::cuda {

namespace {

// Reports a failed release call; the memory or event is given up on.
void report_release_error(cudaError_t status, const char* call) {
  cudaGetLastError();  // clear the error so later calls do not see it
  std::cerr << "b3: " << call << " failed while releasing: " << cudaGetErrorString(status)
            << std::endl;
}

}  // namespace

void* allocate_pinned(size_t nbytes, int device) {
  if (nbytes == 0) throw std::invalid_argument("allocate_pinned: nbytes must be > 0");
  DeviceGuard guard(device);
  void* data = nullptr;
  // Portable: page-locked for every CUDA context, not only this device's.
  const cudaError_t status = cudaHostAlloc(&data, nbytes, cudaHostAllocPortable);
  if (status != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(
        "allocate_pinned: cudaHostAlloc of " + std::to_string(nbytes) +
        " bytes of page-locked host memory failed: " + cudaGetErrorString(status) +
        " (the system may limit locked memory; see ulimit -l)");
  }
  return data;
}

void free_pinned(void* data) {
  if (data == nullptr) return;
  const cudaError_t status = cudaFreeHost(data);
  if (status != cudaSuccess) report_release_error(status, "cudaFreeHost");
}

EventHandle create_event(int device) {
  DeviceGuard guard(device);
  cudaEvent_t event = nullptr;
  B3_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  return event;
}

void destroy_event(EventHandle event) {
  if (event == nullptr) return;
  const cudaError_t status = cudaEventDestroy(event);
  if (status != cudaSuccess) report_release_error(status, "cudaEventDestroy");
}

void record_event(EventHandle event, const Stream& stream) {
  if (event == nullptr) throw std::invalid_argument("record_event: the event is null");
  DeviceGuard guard(stream.device);
  B3_CUDA_CHECK(cudaEventRecord(event, stream.handle));
}

void wait_event(EventHandle event) {
  if (event == nullptr) throw std::invalid_argument("wait_event: the event is null");
  B3_CUDA_CHECK(cudaEventSynchronize(event));
}

bool event_done(EventHandle event) {
  if (event == nullptr) throw std::invalid_argument("event_done: the event is null");
  const cudaError_t status = cudaEventQuery(event);
  if (status == cudaErrorNotReady) {
    cudaGetLastError();  // not an error: the work is still queued or running
    return false;
  }
  B3_CUDA_CHECK(status);
  return true;
}

void upload_async(void* device_dst, const void* host, size_t nbytes, const Stream& stream) {
  if (nbytes == 0) return;
  if (device_dst == nullptr || host == nullptr) {
    throw std::invalid_argument("upload_async: a null pointer for a copy of " +
                                std::to_string(nbytes) + " bytes");
  }
  DeviceGuard guard(stream.device);
  B3_CUDA_CHECK(cudaMemcpyAsync(device_dst, host, nbytes, cudaMemcpyHostToDevice, stream.handle));
}

}  // namespace b3::cuda
