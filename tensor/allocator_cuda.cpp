// CUDA device memory for a build with the CUDA backend: device discovery,
// aligned device allocation and copies between host and device. A caching
// allocator replaces the plain cudaMalloc here when the CUDA kernels land.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "tensor/allocator.h"
#include "tensor/cuda_check.h"
#include "tensor/device.h"

namespace b3 {

bool built_with_cuda() { return true; }

int cuda_device_count() {
  int count = 0;
  // Any error (no driver, driver too old, no GPU) means "no usable GPU".
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error state
    return 0;
  }
  return count;
}

Allocation allocate_cuda(size_t nbytes, int device_index, const AllocationOptions& options) {
  B3_CUDA_CHECK(cudaSetDevice(device_index));
  void* base = nullptr;
  const size_t total = nbytes + options.alignment;  // cudaMalloc aligns to 256 bytes
  const cudaError_t status = cudaMalloc(&base, total);
  if (status != cudaSuccess) {
    cudaGetLastError();
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    throw std::runtime_error("allocate: CUDA out of memory asking for " + std::to_string(nbytes) +
                             " bytes on cuda:" + std::to_string(device_index) + " (" +
                             std::to_string(free_bytes) + " bytes free of " +
                             std::to_string(total_bytes) + "): " + cudaGetErrorString(status));
  }
  const auto address = reinterpret_cast<uintptr_t>(base);
  const uintptr_t aligned =
      (address + options.alignment - 1) / options.alignment * options.alignment;
  Allocation allocation;
  allocation.data = reinterpret_cast<char*>(aligned) + options.misalignment;
  allocation.nbytes = nbytes;
  allocation.owner = std::shared_ptr<void>(base, [](void* p) { cudaFree(p); });
  return allocation;
}

void copy_bytes_cuda(void* dst, const Device& dst_device, const void* src, const Device& src_device,
                     size_t nbytes) {
  cudaMemcpyKind kind = cudaMemcpyDeviceToDevice;
  if (dst_device.is_cpu() && src_device.is_cuda()) kind = cudaMemcpyDeviceToHost;
  if (dst_device.is_cuda() && src_device.is_cpu()) kind = cudaMemcpyHostToDevice;
  B3_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, kind));
}

}  // namespace b3
