// The CPU inference benchmark (see inference_benchmark.h).
#include "experiment/inference_benchmark.h"

#include <chrono>

#include "autograd/grad_mode.h"
#include "experiment/process_stats.h"
#include "experiment/report.h"
#include "tensor/ops.h"

namespace b3::experiment {

CpuInferenceBenchmark benchmark_cpu_inference(const BenchmarkWorkload& config) {
  MobileNetV3 model(benchmark_model(config));
  model.eval();
  const Tensor images = synthetic_batch(config, parse_memory_format(config.format)).images;

  CpuInferenceBenchmark result;
  result.rss_before_mib = current_rss_mib();
  NoGradGuard no_grad;
  using Clock = std::chrono::steady_clock;
  for (int64_t i = 0; i < config.warmup; ++i) model.forward(images);
  for (int64_t i = 0; i < config.steps; ++i) {
    const auto start = Clock::now();
    const Tensor logits = model.forward(images);
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    result.images_per_second.push_back(static_cast<double>(config.batch_size) / seconds);
    if (i + 1 == config.steps) result.logits_checksum = sum(logits).item();
  }
  result.peak_rss_mib = peak_rss_mib();
  result.mib_per_image =
      (result.peak_rss_mib - result.rss_before_mib) / static_cast<double>(config.batch_size);
  result.median_images_per_second = report::median(result.images_per_second);
  return result;
}

}  // namespace b3::experiment
