// The CPU inference benchmark (see inference_benchmark.h).
#include "experiment/inference_benchmark.h"

#include <chrono>

#include "autograd/grad_mode.h"
#include "experiment/process_stats.h"
#include "experiment/report.h"
#include "models/mobilenet_v3.h"
#include "tensor/ops.h"
#include "tensor/random.h"

namespace b3::experiment {

CpuInferenceBenchmark benchmark_cpu_inference(const InferenceBenchmarkConfig& config) {
  MobileNetV3Options options;
  options.arch = parse_mobilenet_v3_arch(config.model);
  options.num_classes = config.classes;
  options.seed = config.seed;
  MobileNetV3 model(options);
  model.eval();
  Generator gen(config.seed + 1);
  const Tensor images =
      randn({config.batch_size, 3, config.image_size, config.image_size}, gen,
            TensorOptions(DType::f32).with_format(parse_memory_format(config.format)));

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
