// The CUDA entry points of a CPU-only build: each says plainly that b3 was
// built without CUDA, so asking for a CUDA tensor fails with a clear message.
#include <stdexcept>

#include "tensor/allocator.h"
#include "tensor/device.h"

namespace b3 {

static const char* kBuiltWithoutCuda =
    "b3 was built without CUDA (configure with -DB3_CUDA=ON on a machine with the CUDA "
    "toolkit and cuDNN)";

bool built_with_cuda() { return false; }
int cuda_device_count() { return 0; }
std::string cuda_unavailable_reason() { return "b3 was built without CUDA"; }

Allocation allocate_cuda(size_t, int, const AllocationOptions&) {
  throw std::runtime_error(std::string("allocate: ") + kBuiltWithoutCuda);
}

void copy_bytes_cuda(void*, const Device&, const void*, const Device&, size_t, SourceLocation) {
  throw std::runtime_error(std::string("copy: ") + kBuiltWithoutCuda);
}

}  // namespace b3
