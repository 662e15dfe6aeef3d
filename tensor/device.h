// Where a tensor lives: the CPU or one CUDA device, plus whether this build has
// the CUDA backend at all.
#pragma once

#include <string>

namespace b3 {

enum class DeviceType { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static Device cpu() { return {DeviceType::cpu, 0}; }
  static Device cuda(int index = 0) { return {DeviceType::cuda, index}; }
  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  bool operator==(const Device& other) const = default;
  std::string str() const;
};

// True when this binary was built with the CUDA backend (it may still find no GPU).
bool built_with_cuda();

// Number of usable CUDA devices: 0 in a CPU-only build, or when the driver or
// GPU is missing or unusable (cuda_unavailable_reason() then says why).
int cuda_device_count();

// Why cuda_device_count() is 0, in the runtime's own words, e.g. "CUDA driver
// version is insufficient for CUDA runtime version
// (cudaErrorInsufficientDriver)", or "b3 was built without CUDA"; empty when
// at least one device is usable. An old driver is thus told apart from no GPU.
std::string cuda_unavailable_reason();

// Throws a clear error if `device` cannot be used by this build on this machine;
// `what` names the op or object asking.
void require_device_available(const Device& device, const std::string& what);

}  // namespace b3
