// What b3 reports about a CUDA device's memory system: its theoretical peak
// DRAM bandwidth, the ceiling that benchmarks compare a step's memory-traffic
// floor against (experiment/step_cost.h, `b3 bench-step`).
//
// Declared with B3_CUDA_LAUNCHER (tensor/cuda_stream.h): the definition is in
// device_properties_cuda.cpp, compiled only with the CUDA backend; a CPU-only
// build gets an inline stub that throws "built without CUDA".
#pragma once

#include <string>

#include "tensor/cuda_stream.h"

namespace b3::cuda {

struct DeviceMemoryProperties {
  std::string name;               // e.g. "NVIDIA H100 80GB HBM3"
  double memory_clock_khz = 0.0;  // peak memory clock (cudaDevAttrMemoryClockRate)
  int bus_width_bits = 0;         // global memory bus width (cudaDevAttrGlobalMemoryBusWidth)
  double peak_bandwidth_bytes_per_second = 0.0;  // clock * 2 (double data rate) * bus width / 8
};

// The memory properties of CUDA device `device`; throws if there is no such
// device or the runtime fails.
B3_CUDA_LAUNCHER(DeviceMemoryProperties device_memory_properties(int device));

}  // namespace b3::cuda
