// The step benchmark on the CPU and on CUDA (see step_benchmark.h).
#include "experiment/step_benchmark.h"

#include <chrono>
#include <memory>
#include <optional>

#include "distributed/data_parallel.h"
#include "experiment/process_stats.h"
#include "experiment/report.h"
#include "experiment/step_timing.h"
#include "optim/grad_scaler.h"
#include "tensor/cuda_stream.h"

namespace b3::experiment {

namespace {

double mib(size_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

}  // namespace

OptimizerConfig step_benchmark_optimizer(const StepBenchmarkConfig& config) {
  OptimizerConfig optimizer;
  optimizer.name = config.optimizer;
  optimizer.lr = config.optimizer == "adam" ? 5e-4 : 0.01;
  optimizer.momentum = 0.9;
  return optimizer;
}

CpuStepBenchmark benchmark_cpu_step(const StepBenchmarkConfig& config,
                                    const std::function<void(int64_t, double, double)>& on_step,
                                    dist::ProcessGroup* group) {
  // On the CPU the weights stay NCHW as built; only the input takes --format.
  MobileNetV3 model(benchmark_model(config));
  const std::unique_ptr<Optimizer> optimizer =
      make_optimizer(step_benchmark_optimizer(config), model);
  const int world = group != nullptr ? group->size() : 1;
  std::optional<dist::DataParallel> data_parallel;
  StepOptions step_options;
  StepBenchmarkConfig rank_config = config;
  if (world > 1) {
    dist::DataParallelOptions parallel;
    parallel.bucket_bytes = dist::bucket_bytes_of_mib(config.bucket_mb);
    parallel.overlap = dist::parse_overlap(config.overlap);
    data_parallel.emplace(model, *group, parallel);
    step_options.data_parallel = &*data_parallel;
    rank_config.seed = config.seed + static_cast<uint64_t>(group->rank());  // its own batch
  }
  const LabeledBatch batch = synthetic_batch(rank_config, parse_memory_format(config.format));
  CpuStepBenchmark result;
  result.world_size = world;
  result.overlapped = data_parallel && data_parallel->overlaps();
  std::vector<double> step_seconds, reduce_seconds, waited_seconds;
  result.rss_before_mib = current_rss_mib();
  reset_host_memory_peak();
  result.tensors_before_mib = mib(host_memory_stats().active_bytes);

  using Clock = std::chrono::steady_clock;
  for (int64_t i = 0; i < config.warmup; ++i) train_step(model, *optimizer, batch, step_options);
  for (int64_t i = 0; i < config.steps; ++i) {
    const double reduced = data_parallel ? data_parallel->reduce_seconds() : 0.0;
    const double waited = data_parallel ? data_parallel->waited_seconds() : 0.0;
    const auto start = Clock::now();
    const double cpu_start = process_cpu_seconds();
    const StepResult r = train_step(model, *optimizer, batch, step_options);
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    step_seconds.push_back(seconds);
    reduce_seconds.push_back(data_parallel ? data_parallel->reduce_seconds() - reduced : 0.0);
    waited_seconds.push_back(data_parallel ? data_parallel->waited_seconds() - waited : 0.0);
    result.images_per_second.push_back(static_cast<double>(config.batch_size * world) / seconds);
    result.cpu_seconds.push_back(process_cpu_seconds() - cpu_start);
    if (on_step) on_step(i, result.images_per_second.back(), result.cpu_seconds.back());
    result.last_loss = r.loss;
  }
  result.peak_rss_mib = peak_rss_mib();
  result.tensors = host_memory_stats();
  result.step_mib_per_image =
      (result.peak_rss_mib - result.rss_before_mib) / static_cast<double>(config.batch_size);
  result.median_images_per_second = report::median(result.images_per_second);
  result.median_cpu_seconds = report::median(result.cpu_seconds);
  result.median_step_seconds = report::median(step_seconds);
  result.median_reduce_seconds = report::median(reduce_seconds);
  result.median_waited_seconds = report::median(waited_seconds);
  return result;
}

CudaStepBenchmark benchmark_cuda_step(const StepBenchmarkConfig& config, bool amp) {
  const Device device = Device::cuda(0);
  require_device_available(device, "b3 bench-step --device cuda");
  const MemoryFormat format = parse_memory_format(config.format);
  MobileNetV3 model(benchmark_model(config));
  prepare_model(model, device, format);
  const std::unique_ptr<Optimizer> optimizer =
      make_optimizer(step_benchmark_optimizer(config), model);
  std::optional<GradScaler> scaler;
  if (amp) scaler.emplace(device);
  const LabeledBatch batch = batch_for_device(synthetic_batch(config, format), device, format);
  cuda::synchronize(cuda::compute_stream(device.index));
  CudaStepBenchmark result;
  const TimedSteps timed =
      time_train_steps(model, *optimizer, batch, scaler ? &*scaler : nullptr, config.warmup,
                       config.steps, /*read_last_step=*/true, config.cuda_graph);
  result.seconds = timed.seconds_per_step * static_cast<double>(config.steps);
  result.images_per_second = static_cast<double>(config.batch_size * config.steps) / result.seconds;
  result.last = timed.last;
  result.active_bytes_before = timed.device_active_bytes_after_warmup;
  result.memory = cuda::memory_stats(device.index);
  return result;
}

StepCostReading read_step_cost(const StepBenchmarkConfig& config, int64_t activation_bytes,
                               double seconds_per_step, double bandwidth) {
  StepCostOptions options;
  options.model = benchmark_model(config);
  options.image_size = config.image_size;
  options.batch_size = config.batch_size;
  options.activation_bytes = activation_bytes;
  options.optimizer =
      config.optimizer == "adam" ? StepOptimizerKind::adam : StepOptimizerKind::sgd_momentum;
  const StepCost cost = mobilenet_v3_step_cost(options);
  return {cost.total(), achieved_rate(cost, seconds_per_step, bandwidth)};
}

}  // namespace b3::experiment
