// NVML and CUDA-driver queries through dlopen (see nvml.h). The few types and
// constants used are declared here as the NVIDIA headers define them
// (nvml.h, cuda.h), so no NVIDIA header is needed to build.
#include "experiment/nvml.h"

#include <dlfcn.h>
#include <algorithm>

namespace b3::gpu {

namespace abi {  // named, not anonymous: Nvml::Api's members use these types

using nvmlReturn_t = int;  // 0 = NVML_SUCCESS
using nvmlDevice_t = struct nvmlDevice_st*;
struct NvmlMemory {  // nvmlMemory_t
  unsigned long long total, free, used;
};
constexpr int kNvmlClockSm = 1;         // NVML_CLOCK_SM
constexpr int kNvmlTemperatureGpu = 0;  // NVML_TEMPERATURE_GPU
constexpr unsigned kNameLength = 96;    // NVML_DEVICE_NAME_V2_BUFFER_SIZE

// Resolves `name` from `library` into `fn`; false when it is missing.
template <typename Fn>
bool resolve(void* library, const char* name, Fn& fn) {
  fn = reinterpret_cast<Fn>(dlsym(library, name));
  return fn != nullptr;
}

}  // namespace abi

using namespace abi;

struct Nvml::Api {
  void* library = nullptr;
  nvmlReturn_t (*init)() = nullptr;
  nvmlReturn_t (*shutdown)() = nullptr;
  const char* (*error_string)(nvmlReturn_t) = nullptr;
  nvmlReturn_t (*device_count)(unsigned*) = nullptr;
  nvmlReturn_t (*handle_by_index)(unsigned, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*name)(nvmlDevice_t, char*, unsigned) = nullptr;
  nvmlReturn_t (*clock)(nvmlDevice_t, int, unsigned*) = nullptr;
  nvmlReturn_t (*temperature)(nvmlDevice_t, int, unsigned*) = nullptr;
  nvmlReturn_t (*power)(nvmlDevice_t, unsigned*) = nullptr;  // milliwatts
  nvmlReturn_t (*memory)(nvmlDevice_t, NvmlMemory*) = nullptr;
  nvmlReturn_t (*throttle)(nvmlDevice_t, unsigned long long*) = nullptr;  // optional

  std::optional<nvmlDevice_t> handle(int index) const {
    nvmlDevice_t device = nullptr;
    if (index < 0 || handle_by_index(static_cast<unsigned>(index), &device) != 0) return {};
    return device;
  }
};

std::unique_ptr<Nvml> Nvml::open(std::string& why_not) {
  void* library = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    const char* error = dlerror();
    why_not = std::string("NVML is not available (") + (error ? error : "libnvidia-ml.so.1") +
              "): no NVIDIA driver on this machine, so GPU clock, temperature and power are "
              "not sampled";
    return nullptr;
  }
  auto api = std::make_unique<Api>();
  api->library = library;
  const bool complete = resolve(library, "nvmlInit_v2", api->init) &&
                        resolve(library, "nvmlShutdown", api->shutdown) &&
                        resolve(library, "nvmlErrorString", api->error_string) &&
                        resolve(library, "nvmlDeviceGetCount_v2", api->device_count) &&
                        resolve(library, "nvmlDeviceGetHandleByIndex_v2", api->handle_by_index) &&
                        resolve(library, "nvmlDeviceGetName", api->name) &&
                        resolve(library, "nvmlDeviceGetClockInfo", api->clock) &&
                        resolve(library, "nvmlDeviceGetTemperature", api->temperature) &&
                        resolve(library, "nvmlDeviceGetPowerUsage", api->power) &&
                        resolve(library, "nvmlDeviceGetMemoryInfo", api->memory);
  if (!complete) {
    why_not = "NVML (libnvidia-ml.so.1) lacks an expected function; driver too old?";
    dlclose(library);
    return nullptr;
  }
  resolve(library, "nvmlDeviceGetCurrentClocksThrottleReasons", api->throttle);
  if (const nvmlReturn_t status = api->init(); status != 0) {
    why_not = std::string("nvmlInit failed: ") + api->error_string(status);
    dlclose(library);
    return nullptr;
  }
  return std::unique_ptr<Nvml>(new Nvml(std::move(api)));
}

Nvml::Nvml(std::unique_ptr<Api> api) : api_(std::move(api)) {}

Nvml::~Nvml() {
  api_->shutdown();
  dlclose(api_->library);
}

int Nvml::device_count() const {
  unsigned count = 0;
  if (api_->device_count(&count) != 0) return 0;
  return static_cast<int>(count);
}

std::string Nvml::device_name(int index) const {
  const auto device = api_->handle(index);
  char name[kNameLength] = {};
  if (!device || api_->name(*device, name, kNameLength) != 0) return "unknown GPU";
  return name;
}

std::optional<GpuSample> Nvml::sample(int index) const {
  const auto device = api_->handle(index);
  if (!device) return {};
  unsigned clock = 0, temperature = 0, milliwatts = 0;
  if (api_->clock(*device, kNvmlClockSm, &clock) != 0 ||
      api_->temperature(*device, kNvmlTemperatureGpu, &temperature) != 0) {
    return {};
  }
  GpuSample s;
  s.sm_clock_mhz = clock;
  s.temperature_c = temperature;
  // Some boards do not report power: left 0 rather than dropping the sample.
  if (api_->power(*device, &milliwatts) == 0) s.power_w = milliwatts / 1000.0;
  unsigned long long reasons = 0;
  if (api_->throttle != nullptr && api_->throttle(*device, &reasons) == 0)
    s.throttle_reasons = reasons;
  return s;
}

std::optional<GpuMemory> Nvml::memory(int index) const {
  const auto device = api_->handle(index);
  NvmlMemory m{};
  if (!device || api_->memory(*device, &m) != 0) return {};
  return GpuMemory{static_cast<double>(m.total), static_cast<double>(m.free),
                   static_cast<double>(m.used)};
}

GpuSampleStats summarize_samples(const std::vector<GpuSample>& samples) {
  GpuSampleStats s;
  s.samples = static_cast<int64_t>(samples.size());
  if (samples.empty()) return s;
  s.clock_min_mhz = samples.front().sm_clock_mhz;
  s.clock_max_mhz = samples.front().sm_clock_mhz;
  for (const GpuSample& g : samples) {
    s.clock_mean_mhz += g.sm_clock_mhz;
    s.clock_min_mhz = std::min(s.clock_min_mhz, g.sm_clock_mhz);
    s.clock_max_mhz = std::max(s.clock_max_mhz, g.sm_clock_mhz);
    s.temperature_mean_c += g.temperature_c;
    s.temperature_max_c = std::max(s.temperature_max_c, g.temperature_c);
    s.power_mean_w += g.power_w;
    s.power_max_w = std::max(s.power_max_w, g.power_w);
    s.throttle_reasons_seen |= g.throttle_reasons;
  }
  const double n = static_cast<double>(samples.size());
  s.clock_mean_mhz /= n;
  s.temperature_mean_c /= n;
  s.power_mean_w /= n;
  return s;
}

std::string throttle_reason_names(uint64_t reasons) {
  // nvmlClocksThrottleReason* bits (nvml.h); 0x1 (GPU idle) is not a slowdown.
  static constexpr std::pair<uint64_t, const char*> kNames[] = {
      {0x2, "application clocks"}, {0x4, "power cap (sw)"}, {0x8, "hw slowdown"},
      {0x10, "sync boost"},        {0x20, "thermal (sw)"},  {0x40, "thermal (hw)"},
      {0x80, "power brake (hw)"},  {0x100, "display clock"}};
  std::string names;
  for (const auto& [bit, name] : kNames) {
    if ((reasons & bit) == 0) continue;
    if (!names.empty()) names += ", ";
    names += name;
  }
  return names.empty() ? "none" : names;
}

GpuSampler::GpuSampler(const Nvml& nvml, int index, std::chrono::milliseconds interval)
    : nvml_(nvml), index_(index), interval_(interval) {}

GpuSampler::~GpuSampler() {
  if (thread_.joinable()) stop();
}

void GpuSampler::start() {
  if (thread_.joinable()) stop();
  samples_.clear();
  stopping_ = false;
  started_ = std::chrono::steady_clock::now();
  thread_ = std::thread([this] { loop(); });
}

void GpuSampler::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    lock.unlock();
    std::optional<GpuSample> s = nvml_.sample(index_);
    lock.lock();
    if (s) {
      s->seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
      samples_.push_back(*s);
    }
    if (stopping_) return;
    wake_.wait_for(lock, interval_, [this] { return stopping_; });
  }
}

std::vector<GpuSample> GpuSampler::stop() {
  if (!thread_.joinable()) return samples_;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
  return samples_;
}

namespace {

using CUresult = int;                       // 0 = CUDA_SUCCESS
constexpr int kAttributeSmCount = 16;       // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
constexpr int kAttributeComputeMajor = 75;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
constexpr int kAttributeComputeMinor = 76;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR

}  // namespace

std::optional<CudaDeviceFacts> query_cuda_device(int index, std::string& why_not) {
  void* library = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    const char* error = dlerror();
    why_not =
        std::string("the CUDA driver is not available (") + (error ? error : "libcuda.so.1") + ")";
    return {};
  }
  CUresult (*init)(unsigned) = nullptr;
  CUresult (*device_get)(int*, int) = nullptr;
  CUresult (*get_attribute)(int*, int, int) = nullptr;
  CUresult (*get_name)(char*, int, int) = nullptr;
  std::optional<CudaDeviceFacts> facts;
  if (!resolve(library, "cuInit", init) || !resolve(library, "cuDeviceGet", device_get) ||
      !resolve(library, "cuDeviceGetAttribute", get_attribute) ||
      !resolve(library, "cuDeviceGetName", get_name)) {
    why_not = "libcuda.so.1 lacks an expected function";
  } else if (CUresult status = init(0); status != 0) {
    why_not = "cuInit failed with CUDA error " + std::to_string(status) + " (no usable GPU?)";
  } else {
    int device = 0;
    CudaDeviceFacts f;
    char name[256] = {};
    if (device_get(&device, index) != 0) {
      why_not = "there is no CUDA device " + std::to_string(index);
    } else if (get_attribute(&f.sm_count, kAttributeSmCount, device) != 0 ||
               get_attribute(&f.compute_major, kAttributeComputeMajor, device) != 0 ||
               get_attribute(&f.compute_minor, kAttributeComputeMinor, device) != 0 ||
               get_name(name, sizeof name, device) != 0) {
      why_not = "cuDeviceGetAttribute failed for device " + std::to_string(index);
    } else {
      f.name = name;
      facts = f;
    }
  }
  // The driver stays loaded: unloading libcuda after cuInit is not supported.
  return facts;
}

}  // namespace b3::gpu
