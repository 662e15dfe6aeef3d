// CUDA device memory for tensor storage, in a build with the CUDA backend:
// device discovery, allocation from the device's caching allocator (for its
// compute stream), and copies between host and device ordered on that stream.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "tensor/allocator.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/device.h"

namespace b3 {

bool built_with_cuda() { return true; }

namespace {

// cudaGetDeviceCount's answer: the count, or 0 and the error in words.
struct DeviceQuery {
  int count = 0;
  std::string error;
};

DeviceQuery query_devices() {
  DeviceQuery query;
  const cudaError_t status = cudaGetDeviceCount(&query.count);
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear the error state, so later calls do not report it again
    query.count = 0;
    query.error = std::string(cudaGetErrorString(status)) + " (" + cudaGetErrorName(status) + ")";
  } else if (query.count == 0) {
    query.error = "the CUDA driver reports no GPU";
  }
  return query;
}

}  // namespace

int cuda_device_count() { return query_devices().count; }

std::string cuda_unavailable_reason() { return query_devices().error; }

Allocation allocate_cuda(size_t nbytes, int device_index, const AllocationOptions& options) {
  cuda::CudaContext& context = cuda::context(device_index);
  return context.allocator().allocate(nbytes, options, context.stream().handle);
}

// Copies go through the compute stream of the device involved, so they are
// ordered after every kernel already queued there on that data (the legacy
// default stream would not wait for the non-blocking compute stream). A copy
// that touches host memory or a second GPU waits until it is done: the caller
// may read or free its host buffer at once. A copy within one GPU is only
// queued (no host synchronization inside a training step).
void copy_bytes_cuda(void* dst, const Device& dst_device, const void* src, const Device& src_device,
                     size_t nbytes, SourceLocation caller) {
  if (nbytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    throw std::logic_error("copy_bytes_cuda: a host-to-host copy does not belong here");
  }
  if (dst_device.is_cuda() && src_device.is_cuda() && dst_device.index != src_device.index) {
    // Between two GPUs: finish the source's pending work, copy on the destination's stream.
    cuda::synchronize(cuda::context(src_device.index).stream(), caller);
  }
  const int device = dst_device.is_cuda() ? dst_device.index : src_device.index;
  const cuda::Stream stream = cuda::context(device).stream();
  const bool within_one_gpu =
      dst_device.is_cuda() && src_device.is_cuda() && dst_device.index == src_device.index;
  // Counted before the copy is queued: inside a CUDA graph capture this throws
  // before anything reaches the stream.
  if (!within_one_gpu) {
    cuda::context(device).note_host_wait(
        dst_device.is_cpu() ? "copy to the host" : "copy from the host", caller);
  }
  cuda::DeviceGuard guard(device);
  B3_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault, stream.handle));
  if (!within_one_gpu) B3_CUDA_CHECK(cudaStreamSynchronize(stream.handle));
}

}  // namespace b3
