// `b3 bench-infer`: the throughput of MobileNetV3's forward pass in
// evaluation mode on the CPU (experiment/inference_benchmark.h: what is timed
// and how memory is counted). Prints the rate and memory, then a last line
// starting with "RESULT" for experiment/compare_cpu.sh.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/options.h"
#include "experiment/inference_benchmark.h"

namespace b3::cli {

namespace {

void run_bench_infer(const experiment::BenchmarkWorkload& c) {
  omp_set_num_threads(c.threads);
  const experiment::CpuInferenceBenchmark r = experiment::benchmark_cpu_inference(c);
  std::printf(
      "b3 %s %lldx%lld batch %lld %s f32 eval forward, %d threads: median %.2f img/s (min %.2f, "
      "max %.2f, %lld forwards after %lld warm-up; sum of the logits %.6g)\n",
      c.model.c_str(), static_cast<long long>(c.image_size), static_cast<long long>(c.image_size),
      static_cast<long long>(c.batch_size), c.format.c_str(), c.threads, r.median_images_per_second,
      *std::min_element(r.images_per_second.begin(), r.images_per_second.end()),
      *std::max_element(r.images_per_second.begin(), r.images_per_second.end()),
      static_cast<long long>(c.steps), static_cast<long long>(c.warmup), r.logits_checksum);
  std::printf("memory: peak RSS %.1f MiB, before the first forward %.1f MiB, %.2f MiB per image\n",
              r.peak_rss_mib, r.rss_before_mib, r.mib_per_image);
  std::printf(
      "RESULT framework=b3 mode=eval format=%s image=%lld batch=%lld img_per_s=%.3f "
      "peak_rss_mib=%.1f mib_per_image=%.3f\n",
      c.format.c_str(), static_cast<long long>(c.image_size), static_cast<long long>(c.batch_size),
      r.median_images_per_second, r.peak_rss_mib, r.mib_per_image);
}

}  // namespace

void register_bench_infer_command(CLI::App& app) {
  auto config = std::make_shared<experiment::BenchmarkWorkload>();
  experiment::BenchmarkWorkload& c = *config;
  c.batch_size = 256;  // the reference's inference batch
  CLI::App* cmd = app.add_subcommand(
      "bench-infer", "time the model's evaluation-mode forward pass on synthetic data (CPU)");
  add_workload_options(cmd, c, "forwards");
  cmd->callback([config] { run_bench_infer(*config); });
}

}  // namespace b3::cli
