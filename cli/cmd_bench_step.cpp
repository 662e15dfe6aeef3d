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
// PyTorch script (experiment/pytorch_step.py) reports the same two numbers
// the same way, so the two are comparable. b3 also prints its host
// allocator's own peak of bytes in use by tensors (tensor/allocator.h). The last line, starting
// with "RESULT", is for scripts (experiment/compare_cpu.sh). B3_STEP_TRACE=1
// also prints every timed CPU step's rate to stderr (to see drift and noise).
//
// --device cuda: the model is moved to the GPU (channels_last weights with
// --format nhwc), the batch uploaded once, and by default the step runs in
// mixed precision (--no-amp: f32) with a GradScaler, as the reference
// benchmark's torch.cuda.amp. Kernels are queued asynchronously, so the timed
// steps run back to back between two cuda::synchronize calls on the compute
// stream and the figure is their mean img/s (the last step reads its loss).
// Memory is the device caching allocator's peak of bytes in use (active) and
// held (reserved) during the steps (tensor/cuda_allocator.h).
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/options.h"
#include "experiment/step_cost.h"
#include "models/mobilenet_v3.h"
#include "optim/grad_scaler.h"
#include "tensor/cuda_allocator.h"
#include "tensor/cuda_stream.h"
#include "tensor/device_properties.h"
#include "tensor/random.h"
#include "train/setup.h"
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
  std::string device = "cpu";
  std::optional<bool> amp;  // unset: on for cuda, off for cpu
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

// bench-step's optimizers: SGD lr 0.01 momentum 0.9, or Adam lr 5e-4.
OptimizerConfig optimizer_config(const BenchStepArgs& args) {
  OptimizerConfig config;
  config.name = args.optimizer;
  config.lr = args.optimizer == "adam" ? 5e-4 : 0.01;
  config.momentum = 0.9;
  return config;
}

double mib(size_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

// The benchmarked model: --model, --classes and --seed (both devices).
MobileNetV3Options model_options(const BenchStepArgs& args) {
  MobileNetV3Options options;
  options.arch = parse_mobilenet_v3_arch(args.model);
  options.num_classes = args.classes;
  options.seed = args.seed;
  return options;
}

// The analytic cost of the step just timed (experiment/step_cost.h) read against
// its measured time and a memory bandwidth: the device's theoretical peak on
// CUDA, a measured host copy bandwidth on the CPU.
void print_step_cost(const BenchStepArgs& args, int64_t activation_bytes, double seconds_per_step,
                     double bandwidth, const std::string& bandwidth_source) {
  StepCostOptions options;
  options.model = model_options(args);
  options.image_size = args.image_size;
  options.batch_size = args.batch_size;
  options.activation_bytes = activation_bytes;
  options.optimizer =
      args.optimizer == "adam" ? StepOptimizerKind::adam : StepOptimizerKind::sgd_momentum;
  const StepCost cost = mobilenet_v3_step_cost(options);
  const PassCost total = cost.total();
  const AchievedRate rate = achieved_rate(cost, seconds_per_step, bandwidth);
  std::printf(
      "step cost: %.3f GFLOP, floor %.3f GB (fused %.3f GB); at the measured step time that is "
      "%.1f GFLOP/s and %.1f GB/s = %.1f%% of %.1f GB/s (%s; fused floor: %.1f%%)\n",
      total.flops / 1e9, total.bytes / 1e9, total.fused_bytes / 1e9, rate.flops_per_second / 1e9,
      rate.bytes_per_second / 1e9, 100.0 * rate.fraction_of_bandwidth, bandwidth / 1e9,
      bandwidth_source.c_str(), 100.0 * rate.fused_fraction_of_bandwidth);
}

// The CUDA variant: one block of back-to-back steps between two synchronizations.
void run_bench_step_cuda(const BenchStepArgs& args, bool amp) {
  const Device device = Device::cuda(0);
  require_device_available(device, "b3 bench-step --device cuda");
  const MemoryFormat format = parse_memory_format(args.format);
  MobileNetV3 model(model_options(args));
  prepare_model(model, device, format);
  std::unique_ptr<Optimizer> optimizer = make_optimizer(optimizer_config(args), model);
  std::optional<GradScaler> scaler;
  if (amp) scaler.emplace(device);

  Generator gen(args.seed + 1);
  LabeledBatch host_batch;
  host_batch.images = randn({args.batch_size, 3, args.image_size, args.image_size}, gen,
                            TensorOptions(DType::f32).with_format(format));
  host_batch.labels = randint(args.classes, {args.batch_size}, gen);
  const LabeledBatch batch = batch_for_device(host_batch, device, format);
  const cuda::Stream stream = cuda::compute_stream(device.index);
  cuda::synchronize(stream);
  const size_t active_before = cuda::memory_stats(device.index).active_bytes;
  cuda::reset_peak_memory(device.index);

  StepOptions step;
  step.scaler = scaler ? &*scaler : nullptr;
  for (int64_t i = 0; i < args.warmup; ++i) train_step(model, *optimizer, batch, step);
  using Clock = std::chrono::steady_clock;
  cuda::synchronize(stream);
  const auto start = Clock::now();
  StepResult last;
  for (int64_t i = 0; i < args.steps; ++i) {
    step.read_results = (i + 1 == args.steps);  // no host reads until the last step
    last = train_step(model, *optimizer, batch, step);
  }
  cuda::synchronize(stream);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const double rate = static_cast<double>(args.batch_size * args.steps) / seconds;
  const cuda::MemoryStats memory = cuda::memory_stats(device.index);
  const char* dtype = amp ? "amp-f16" : "f32";
  std::printf(
      "b3 %s %lldx%lld batch %lld %s %s %s, %s: %.2f img/s (mean of %lld back-to-back steps, "
      "%.2f ms per step, after %lld warm-up; loss %.4f",
      args.model.c_str(), static_cast<long long>(args.image_size),
      static_cast<long long>(args.image_size), static_cast<long long>(args.batch_size),
      args.format.c_str(), dtype, args.optimizer.c_str(), device.str().c_str(), rate,
      static_cast<long long>(args.steps), 1e3 * seconds / static_cast<double>(args.steps),
      static_cast<long long>(args.warmup), last.loss);
  if (amp) std::printf(", loss scale %.0f", last.loss_scale);
  std::printf(")\n");
  std::printf(
      "device memory (b3's caching allocator): peak %.1f MiB in use (%.1f before the steps, "
      "%.2f MiB per image), peak %.1f MiB reserved; %llu device mallocs in all\n",
      mib(memory.peak_active_bytes), mib(active_before),
      (mib(memory.peak_active_bytes) - mib(active_before)) / static_cast<double>(args.batch_size),
      mib(memory.peak_reserved_bytes), static_cast<unsigned long long>(memory.device_mallocs));
  const cuda::DeviceMemoryProperties memory_properties =
      cuda::device_memory_properties(device.index);
  print_step_cost(args, amp ? 2 : 4, seconds / static_cast<double>(args.steps),
                  memory_properties.peak_bandwidth_bytes_per_second,
                  memory_properties.name + " theoretical peak");
  std::printf(
      "RESULT framework=b3 device=%s dtype=%s format=%s image=%lld batch=%lld img_per_s=%.3f "
      "peak_active_mib=%.1f peak_reserved_mib=%.1f peak_gpu_bytes=%llu\n",
      device.str().c_str(), dtype, args.format.c_str(), static_cast<long long>(args.image_size),
      static_cast<long long>(args.batch_size), rate, mib(memory.peak_active_bytes),
      mib(memory.peak_reserved_bytes), static_cast<unsigned long long>(memory.peak_active_bytes));
}

void run_bench_step(const BenchStepArgs& args) {
  omp_set_num_threads(args.threads);
  const bool amp = resolve_amp(args.amp, args.device == "cuda", "b3 bench-step");
  if (args.device == "cuda") {
    run_bench_step_cuda(args, amp);
    return;
  }
  const MemoryFormat format = parse_memory_format(args.format);
  MobileNetV3 model(model_options(args));
  std::unique_ptr<Optimizer> optimizer_holder = make_optimizer(optimizer_config(args), model);
  Optimizer& optimizer = *optimizer_holder;

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
  const bool trace_steps = std::getenv("B3_STEP_TRACE") != nullptr;
  for (int64_t i = 0; i < args.steps; ++i) {
    const auto start = Clock::now();
    const double cpu_start = process_cpu_seconds();
    const StepResult r = train_step(model, optimizer, batch);
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    rates.push_back(static_cast<double>(args.batch_size) / seconds);
    if (trace_steps) {
      std::fprintf(stderr, "step %lld: %.1f img/s, %.3f CPU s\n", static_cast<long long>(i),
                   rates.back(), process_cpu_seconds() - cpu_start);
    }
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
  print_step_cost(args, 4, static_cast<double>(args.batch_size) / med,
                  measure_host_copy_bandwidth(args.threads),
                  "host copy bandwidth, " + std::to_string(args.threads) + " threads, best of 3");
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
      "bench-step", "time train_step (forward, loss, backward, optimizer) on synthetic data");
  cmd->add_option("--model", args->model, "mobilenet_v3_large or mobilenet_v3_small")
      ->check(CLI::IsMember({"mobilenet_v3_large", "mobilenet_v3_small", "large", "small"}));
  cmd->add_option("--classes", args->classes, "classes")->check(CLI::PositiveNumber);
  cmd->add_option("--image-size", args->image_size, "image height and width")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--batch-size", args->batch_size, "batch size")->check(CLI::PositiveNumber);
  cmd->add_option("--format", args->format, "memory format: nchw or nhwc")
      ->check(CLI::IsMember({"nchw", "nhwc"}));
  cmd->add_option("--optimizer", args->optimizer, "sgd (lr 0.01, momentum 0.9) or adam (lr 5e-4)")
      ->check(CLI::IsMember({"sgd", "adam"}));
  cmd->add_option("--device", args->device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  const AmpOption amp(cmd);
  cmd->add_option("--threads", args->threads, "OpenMP threads")->check(CLI::PositiveNumber);
  cmd->add_option("--warmup", args->warmup, "untimed steps first")->check(CLI::NonNegativeNumber);
  cmd->add_option("--steps", args->steps, "timed steps")->check(CLI::PositiveNumber);
  cmd->add_option("--seed", args->seed, "seed of weights and data");
  cmd->callback([args, amp] {
    args->amp = amp.choice();
    run_bench_step(*args);
  });
}

}  // namespace b3::cli
