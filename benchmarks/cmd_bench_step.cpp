// `b3 bench-step`: the throughput of one training step, the unit that
// train() repeats (train_step in train/trainer.h: forward, cross-entropy,
// backward, optimizer step), on synthetic tensors already in memory, so that
// neither data loading nor evaluation is timed.
//
//   warm-up steps (not timed: first-touch page faults, allocator caches fill)
//   N timed steps, each timed on its own; the median img/s is the figure
//
// Memory: the peak resident set of the process (getrusage ru_maxrss) and the
// resident set after the model, optimizer and batch exist; their difference
// divided by the batch is "step memory per image" (what a training step adds
// per image: activations saved for backward, gradients, workspaces). The
// PyTorch script (benchmarks/pytorch_step.py) reports the same two numbers
// the same way, so the two are comparable. b3 also prints its host
// allocator's own peak of bytes in use by tensors (tensor/allocator.h). The last line, starting
// with "RESULT", is for scripts (benchmarks/compare_cpu.sh).
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <string>
#include <vector>

#include "benchmarks/commands.h"
#include "models/mobilenet_v3.h"
#include "optim/sgd.h"
#include "tensor/random.h"
#include "train/trainer.h"

namespace b3::cli {

namespace {

struct BenchStepArgs {
  std::string model = "mobilenet_v3_large";
  int64_t classes = 10;
  int64_t image_size = 32;
  int64_t batch_size = 128;
  std::string format = "nhwc";
  std::string optimizer = "sgd";
  int threads = 2;
  int64_t warmup = 2;
  int64_t steps = 5;
  uint64_t seed = 0;
};

// Peak resident set of this process so far, in MiB (Linux reports KiB).
double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

// Current resident set in MiB, from /proc/self/statm (pages).
double current_rss_mib() {
  std::ifstream statm("/proc/self/statm");
  long long total_pages = 0, resident_pages = 0;
  statm >> total_pages >> resident_pages;
  return static_cast<double>(resident_pages) * 4096.0 / (1024.0 * 1024.0);
}

// CPU time of all threads of this process so far, in seconds: with one
// thread, a measure of the work that a loaded machine does not inflate.
double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

void run_bench_step(const BenchStepArgs& args) {
  omp_set_num_threads(args.threads);
  const MemoryFormat format =
      args.format == "nhwc" ? MemoryFormat::channels_last : MemoryFormat::contiguous;

  MobileNetV3Options options;
  options.arch = parse_mobilenet_v3_arch(args.model);
  options.num_classes = args.classes;
  options.seed = args.seed;
  MobileNetV3 model(options);
  SgdOptions sgd;
  sgd.lr = 0.01;
  sgd.momentum = 0.9;
  Sgd optimizer(model.parameters(), sgd);

  Generator gen(args.seed + 1);
  LabeledBatch batch;
  batch.images = randn({args.batch_size, 3, args.image_size, args.image_size}, gen,
                       TensorOptions(DType::f32).with_format(format));
  batch.labels = randint(args.classes, {args.batch_size}, gen);
  const double rss_before = current_rss_mib();
  reset_host_memory_peak();
  const double tensors_before = static_cast<double>(host_memory_stats().active_bytes) / (1 << 20);

  using Clock = std::chrono::steady_clock;
  for (int64_t i = 0; i < args.warmup; ++i) train_step(model, optimizer, batch);
  std::vector<double> rates, cpu_seconds;
  double last_loss = 0.0;
  for (int64_t i = 0; i < args.steps; ++i) {
    const auto start = Clock::now();
    const double cpu_start = process_cpu_seconds();
    const StepResult r = train_step(model, optimizer, batch);
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    rates.push_back(static_cast<double>(args.batch_size) / seconds);
    cpu_seconds.push_back(process_cpu_seconds() - cpu_start);
    last_loss = r.loss;
  }
  const double peak = peak_rss_mib();
  const HostMemoryStats tensors = host_memory_stats();
  const double per_image = (peak - rss_before) / static_cast<double>(args.batch_size);
  const double med = median(rates);
  std::printf(
      "b3 %s %lldx%lld batch %lld %s f32 %s, %d threads: median %.2f img/s (min %.2f, max "
      "%.2f, %lld steps after %lld warm-up; loss %.4f); CPU time %.3f s per step (median)\n",
      args.model.c_str(), static_cast<long long>(args.image_size),
      static_cast<long long>(args.image_size), static_cast<long long>(args.batch_size),
      args.format.c_str(), args.optimizer.c_str(), args.threads, med,
      *std::min_element(rates.begin(), rates.end()), *std::max_element(rates.begin(), rates.end()),
      static_cast<long long>(args.steps), static_cast<long long>(args.warmup), last_loss,
      median(cpu_seconds));
  std::printf(
      "memory: peak RSS %.1f MiB, before the first step %.1f MiB, step memory %.2f MiB per "
      "image\n",
      peak, rss_before, per_image);
  std::printf(
      "tensors (b3's host allocator): peak %.1f MiB in use (%.1f before the step, %.2f MiB "
      "per image), peak %.1f MiB held with the cache; %.1f%% of requests from the cache\n",
      static_cast<double>(tensors.peak_active_bytes) / (1 << 20), tensors_before,
      (static_cast<double>(tensors.peak_active_bytes) / (1 << 20) - tensors_before) /
          static_cast<double>(args.batch_size),
      static_cast<double>(tensors.peak_reserved_bytes) / (1 << 20),
      tensors.allocations > 0 ? 100.0 * static_cast<double>(tensors.cache_hits) /
                                    static_cast<double>(tensors.allocations)
                              : 0.0);
  std::printf(
      "RESULT framework=b3 format=%s image=%lld batch=%lld img_per_s=%.3f peak_rss_mib=%.1f "
      "mib_per_image=%.3f cpu_s_per_step=%.4f\n",
      args.format.c_str(), static_cast<long long>(args.image_size),
      static_cast<long long>(args.batch_size), med, peak, per_image, median(cpu_seconds));
}

}  // namespace

void register_bench_step_command(CLI::App& app) {
  auto args = std::make_shared<BenchStepArgs>();
  CLI::App* cmd = app.add_subcommand(
      "bench-step", "time train_step (forward, loss, backward, SGD) on synthetic data");
  cmd->add_option("--model", args->model, "mobilenet_v3_large or mobilenet_v3_small")
      ->check(CLI::IsMember({"mobilenet_v3_large", "mobilenet_v3_small", "large", "small"}));
  cmd->add_option("--classes", args->classes, "classes")->check(CLI::PositiveNumber);
  cmd->add_option("--image-size", args->image_size, "image height and width")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--batch-size", args->batch_size, "batch size")->check(CLI::PositiveNumber);
  cmd->add_option("--format", args->format, "memory format: nchw or nhwc")
      ->check(CLI::IsMember({"nchw", "nhwc"}));
  cmd->add_option("--optimizer", args->optimizer, "sgd (lr 0.01, momentum 0.9)")
      ->check(CLI::IsMember({"sgd"}));
  cmd->add_option("--threads", args->threads, "OpenMP threads")->check(CLI::PositiveNumber);
  cmd->add_option("--warmup", args->warmup, "untimed steps first")->check(CLI::NonNegativeNumber);
  cmd->add_option("--steps", args->steps, "timed steps")->check(CLI::PositiveNumber);
  cmd->add_option("--seed", args->seed, "seed of weights and data");
  cmd->callback([args] { run_bench_step(*args); });
}

}  // namespace b3::cli
