// What the NVIDIA driver can tell about a GPU while b3 measures it, loaded
// at run time with dlopen, so the b3 binary needs no NVIDIA library to build
// or start:
//
//   Nvml        libnvidia-ml.so.1 (NVML): name, SM clock, temperature, power,
//               memory, throttle reasons
//   GpuSampler  samples one GPU through NVML on a background thread while a
//               run goes on, so clock or temperature drift shows in the report
//   query_cuda_device()  libcuda.so.1 (the driver API): SM count and compute
//               capability (b3 suggest), without the CUDA backend being built
//
// Without the libraries (a CPU machine) open() and query_cuda_device() return
// nothing and say why; callers report "not sampled" instead of numbers.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace b3::gpu {

struct GpuSample {
  double seconds = 0.0;           // since the sampler started
  double sm_clock_mhz = 0.0;      // current SM clock
  double temperature_c = 0.0;     // GPU core temperature
  double power_w = 0.0;           // board power draw
  uint64_t throttle_reasons = 0;  // NVML's clocks-throttle-reason bits (0: none known)
};

struct GpuMemory {
  double total_bytes = 0.0, free_bytes = 0.0, used_bytes = 0.0;
};

// A loaded, initialized NVML. Not copyable; shuts NVML down and unloads it
// when destroyed. NVML calls are thread-safe, so one Nvml serves a sampler
// thread and the caller together.
class Nvml {
 public:
  // Loads libnvidia-ml.so.1 and calls nvmlInit; nothing (and `why_not` set)
  // when the library is missing or NVML does not start.
  static std::unique_ptr<Nvml> open(std::string& why_not);
  ~Nvml();
  Nvml(const Nvml&) = delete;
  Nvml& operator=(const Nvml&) = delete;

  int device_count() const;
  std::string device_name(int index) const;
  // One reading of clock, temperature and power; nothing when the device
  // index is invalid or a query fails.
  std::optional<GpuSample> sample(int index) const;
  std::optional<GpuMemory> memory(int index) const;

  struct Api;  // the resolved NVML entry points (nvml.cpp)

 private:
  explicit Nvml(std::unique_ptr<Api> api);
  std::unique_ptr<Api> api_;
};

// Statistics of the samples taken during one run.
struct GpuSampleStats {
  int64_t samples = 0;
  double clock_mean_mhz = 0.0, clock_min_mhz = 0.0, clock_max_mhz = 0.0;
  double temperature_mean_c = 0.0, temperature_max_c = 0.0;
  double power_mean_w = 0.0, power_max_w = 0.0;
  uint64_t throttle_reasons_seen = 0;  // OR of every sample's reasons
};

GpuSampleStats summarize_samples(const std::vector<GpuSample>& samples);

// Names the throttle-reason bits NVML reports ("thermal (hw)", "power cap", ...);
// "none" for 0. GPU idle (bit 0) is left out: it only means "not busy".
std::string throttle_reason_names(uint64_t reasons);

// Samples GPU `index` every `interval` from start() until stop().
class GpuSampler {
 public:
  GpuSampler(const Nvml& nvml, int index,
             std::chrono::milliseconds interval = std::chrono::milliseconds(200));
  ~GpuSampler();
  GpuSampler(const GpuSampler&) = delete;
  GpuSampler& operator=(const GpuSampler&) = delete;

  void start();
  // Stops sampling (takes one last sample) and returns every sample taken.
  std::vector<GpuSample> stop();

 private:
  void loop();

  const Nvml& nvml_;
  int index_;
  std::chrono::milliseconds interval_;
  std::chrono::steady_clock::time_point started_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::vector<GpuSample> samples_;
};

struct CudaDeviceFacts {
  std::string name;
  int sm_count = 0;
  int compute_major = 0, compute_minor = 0;
};

// Asks the CUDA driver (libcuda.so.1, loaded at run time) about device `index`;
// nothing (and `why_not` set) without a driver or a device.
std::optional<CudaDeviceFacts> query_cuda_device(int index, std::string& why_not);

}  // namespace b3::gpu
