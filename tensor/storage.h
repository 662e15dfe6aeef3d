// Storage: one block of memory on one device, shared by every Tensor that
// views it (a transpose, a slice and the original all point at one Storage).
#pragma once

#include <cstddef>
#include <memory>

#include "tensor/allocator.h"
#include "tensor/device.h"

namespace b3 {

class Storage {
 public:
  Storage(size_t nbytes, const Device& device, const AllocationOptions& options)
      : allocation_(allocate(nbytes, device, options)), device_(device), options_(options) {}

  void* data() { return allocation_.data; }
  const void* data() const { return allocation_.data; }
  size_t nbytes() const { return allocation_.nbytes; }
  const Device& device() const { return device_; }
  const AllocationOptions& allocation_options() const { return options_; }

 private:
  Allocation allocation_;
  Device device_;
  AllocationOptions options_;
};

}  // namespace b3
