// A timed run of train_step() calls between two synchronizations (see
// step_timing.h).
#include "experiment/step_timing.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>

#include "experiment/gpu_timing.h"
#include "tensor/cuda_allocator.h"
#include "tensor/random.h"
#include "train/graphed_step.h"

namespace b3::experiment {

TimedSteps time_train_steps(Module& model, Optimizer& optimizer, const LabeledBatch& batch,
                            GradScaler* scaler, int64_t warmup, int64_t steps, bool read_last_step,
                            bool cuda_graph) {
  if (steps < 1) {
    throw std::invalid_argument("time_train_steps: steps must be at least 1, got " +
                                std::to_string(steps));
  }
  const Device device = model_device(model);
  StepOptions options;
  options.scaler = scaler;
  // The CPU reads every step's results, as train() does; a GPU only queues.
  options.read_results = device.is_cpu();
  std::optional<GraphedTrainStep> graphed;
  if (cuda_graph) {
    graphed.emplace(model, optimizer, scaler);  // refuses a model that is not on CUDA
    warmup = std::max<int64_t>(warmup, 2);      // its eager step and its capture
  }
  const auto one_step = [&] {
    return graphed ? graphed->step(batch, options) : train_step(model, optimizer, batch, options);
  };
  for (int64_t i = 0; i < warmup; ++i) one_step();
  synchronize(device);
  TimedSteps timed;
  if (device.is_cuda()) {
    timed.device_active_bytes_after_warmup = cuda::memory_stats(device.index).active_bytes;
    cuda::reset_peak_memory(device.index);
  }
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i) {
    if (read_last_step && i + 1 == steps) options.read_results = true;
    timed.last = one_step();
  }
  synchronize(device);
  timed.seconds_per_step =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() /
      static_cast<double>(steps);
  return timed;
}

LabeledBatch uniform_batch(int64_t batch, int64_t image_size, int64_t classes, MemoryFormat format,
                           const Device& device, uint64_t seed) {
  Generator gen(seed);
  LabeledBatch data;
  data.images =
      rand({batch, 3, image_size, image_size}, gen, TensorOptions(DType::f32).with_format(format))
          .to(device);
  data.labels = randint(classes, {batch}, gen).to(device);
  return data;
}

}  // namespace b3::experiment
