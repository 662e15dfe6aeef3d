// The CUDA side of tensor/device_properties.h. The clock and bus width come
// from cudaDeviceGetAttribute: CUDA 13 removed memoryClockRate from
// cudaDeviceProp, and the attributes work from CUDA 5 on.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "tensor/cuda_check.h"
#include "tensor/device_properties.h"

namespace b3::cuda {

DeviceMemoryProperties device_memory_properties(int device) {
  int count = 0;
  B3_CUDA_CHECK(cudaGetDeviceCount(&count));
  if (device < 0 || device >= count) {
    throw std::invalid_argument("device_memory_properties: no CUDA device " +
                                std::to_string(device) + " (" + std::to_string(count) +
                                " visible)");
  }
  int clock_khz = 0, bus_bits = 0;
  B3_CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device));
  B3_CUDA_CHECK(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device));
  cudaDeviceProp props{};
  B3_CUDA_CHECK(cudaGetDeviceProperties(&props, device));
  DeviceMemoryProperties out;
  out.name = props.name;
  out.memory_clock_khz = static_cast<double>(clock_khz);
  out.bus_width_bits = bus_bits;
  out.peak_bandwidth_bytes_per_second =
      static_cast<double>(clock_khz) * 1e3 * 2.0 * static_cast<double>(bus_bits) / 8.0;
  return out;
}

}  // namespace b3::cuda
