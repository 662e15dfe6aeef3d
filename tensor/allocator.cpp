// Aligned host allocation (with optional deliberate misalignment) and the
// dispatch of device allocations to the CUDA backend.
#include "tensor/allocator.h"

#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>

namespace b3 {

AllocationOptions default_allocation(const Device& device) {
  AllocationOptions options;
  options.alignment = device.is_cpu() ? 64 : 256;
  return options;
}

static void check_options(const AllocationOptions& options) {
  const size_t a = options.alignment;
  if (a == 0 || (a & (a - 1)) != 0 || a < alignof(std::max_align_t) / 2) {
    throw std::invalid_argument("allocate: alignment " + std::to_string(a) +
                                " must be a power of two of at least 8 bytes");
  }
  if (options.misalignment >= a) {
    throw std::invalid_argument("allocate: misalignment " + std::to_string(options.misalignment) +
                                " must be smaller than the alignment " + std::to_string(a));
  }
}

static Allocation allocate_host(size_t nbytes, const AllocationOptions& options) {
  // Over-allocate by `alignment` so that base + misalignment is inside the block.
  const size_t total = nbytes + options.alignment;
  void* base = std::aligned_alloc(
      options.alignment, (total + options.alignment - 1) / options.alignment * options.alignment);
  if (base == nullptr) {
    throw std::runtime_error("allocate: out of host memory asking for " + std::to_string(nbytes) +
                             " bytes");
  }
  Allocation allocation;
  allocation.data = static_cast<char*>(base) + options.misalignment;
  allocation.nbytes = nbytes;
  allocation.owner = std::shared_ptr<void>(base, [](void* p) { std::free(p); });
  return allocation;
}

Allocation allocate(size_t nbytes, const Device& device, const AllocationOptions& options) {
  check_options(options);
  if (device.is_cpu()) return allocate_host(nbytes, options);
  require_device_available(device, "allocate");
  return allocate_cuda(nbytes, device.index, options);
}

}  // namespace b3
