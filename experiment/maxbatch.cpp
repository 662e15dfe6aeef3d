// The probes and the search of `b3 maxbatch` (see maxbatch.h).
#include "experiment/maxbatch.h"

#include <memory>
#include <optional>
#include <stdexcept>

#include "experiment/gpu_timing.h"
#include "experiment/step_timing.h"
#include "models/mobilenet_v3.h"
#include "optim/grad_scaler.h"
#include "tensor/cuda_allocator.h"
#include "train/setup.h"
#include "train/trainer.h"

namespace b3::experiment {

namespace {

// `steps` queued training steps of a fresh model at `batch`; returns after
// the device has finished them (a failure inside them surfaces there, while
// the probe's tensors are still alive).
void run_probe_steps(int64_t batch, const MaxBatchConfig& config, const Device& device) {
  MobileNetV3Options options;
  options.arch = parse_mobilenet_v3_arch(config.model);
  options.num_classes = 10;
  MobileNetV3 model(options);
  const MemoryFormat format = parse_memory_format(config.format);
  prepare_model(model, device, format);
  // Adam with PyTorch's default lr (1e-3).
  const std::unique_ptr<Optimizer> optimizer = make_optimizer({"adam", 1e-3}, model);
  std::optional<GradScaler> scaler;
  if (config.amp) scaler.emplace(device);
  const LabeledBatch data = uniform_batch(batch, config.image_size, 10, format, device, 0);
  StepOptions step;
  step.scaler = scaler ? &*scaler : nullptr;
  step.read_results = false;  // queued; a failure surfaces at the synchronization
  for (int64_t i = 0; i < config.steps; ++i) train_step(model, *optimizer, data, step);
  synchronize(device);
}

}  // namespace

Device maxbatch_device(const std::string& name) {
  if (name == "cpu") {
    throw std::invalid_argument(
        "b3 maxbatch needs a GPU: it finds the largest batch before CUDA runs out of memory. On "
        "the CPU there is no such boundary to search (memory is virtual; the operating system "
        "swaps or kills the process instead of failing an allocation cleanly). Run it with "
        "--device cuda on a machine with a GPU and b3 built with the CUDA backend (-DB3_CUDA=ON); "
        "on the CPU, the largest usable batch in b3 sweep is the training-set size it reports");
  }
  const Device device = Device::cuda(0);
  require_device_available(device, "b3 maxbatch --device cuda");
  return device;
}

bool probe_fits(int64_t batch, const MaxBatchConfig& config, const Device& device,
                ProbeMemory& memory) {
  synchronize(device);
  cuda::reset_peak_memory(device.index);
  bool fits = false;
  try {
    run_probe_steps(batch, config, device);
    const cuda::MemoryStats stats = cuda::memory_stats(device.index);
    memory.peak_active_bytes = static_cast<double>(stats.peak_active_bytes);
    memory.peak_reserved_bytes = static_cast<double>(stats.peak_reserved_bytes);
    fits = true;
  } catch (const std::exception& e) {
    if (!is_out_of_memory(e)) throw;
  }
  // Everything of the probe is released by now (the exception unwound its
  // scope); give the cached segments back so the next probe starts clean.
  cuda::clear_cache(device.index);
  return fits;
}

MaxBatchResult find_max_batch(
    const MaxBatchConfig& config, const Device& device,
    const std::function<void(int64_t batch, bool fits, const ProbeMemory&)>& on_probe) {
  MaxBatchResult result;
  result.search = report::search_largest(
      [&](int64_t batch) {
        ProbeMemory memory;
        const bool fits = probe_fits(batch, config, device, memory);
        if (fits) result.memory_of[batch] = memory;
        if (on_probe) on_probe(batch, fits, memory);
        return fits;
      },
      config.start, config.limit);
  return result;
}

}  // namespace b3::experiment
