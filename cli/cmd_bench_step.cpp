// `b3 bench-step`: the throughput of one training step, train_step() on
// synthetic tensors already in memory (experiment/step_benchmark.h: what is
// timed and how memory is counted, on the CPU and on CUDA). This file parses
// the options and prints: the rate, the memory, the step's analytic cost
// against a bandwidth, and a last line starting with "RESULT" for scripts
// (experiment/compare_cpu.sh, scripts/gpu_check.sh). B3_STEP_TRACE=1 also
// prints every timed CPU step's rate to stderr (to see drift and noise).
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/range_checks.h"
#include "distributed/launch.h"
#include "experiment/process_stats.h"
#include "experiment/step_benchmark.h"
#include "experiment/step_cost.h"
#include "tensor/device_properties.h"
#include "train/setup.h"

namespace b3::cli {

namespace {

struct BenchStepArgs {
  experiment::StepBenchmarkConfig config;
  std::string device = "cpu";
  std::optional<bool> amp;   // unset: on for cuda, off for cpu
  int64_t report_every = 0;  // CPU: memory and rate every N timed steps (0: off)
};

double mib(size_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

void print_step_cost(const experiment::StepBenchmarkConfig& config, int64_t activation_bytes,
                     double seconds_per_step, double bandwidth,
                     const std::string& bandwidth_source) {
  const experiment::StepCostReading cost =
      experiment::read_step_cost(config, activation_bytes, seconds_per_step, bandwidth);
  std::printf(
      "step cost: %.3f GFLOP, floor %.3f GB (fused %.3f GB); at the measured step time that is "
      "%.1f GFLOP/s and %.1f GB/s = %.1f%% of %.1f GB/s (%s; fused floor: %.1f%%)\n",
      cost.total.flops / 1e9, cost.total.bytes / 1e9, cost.total.fused_bytes / 1e9,
      cost.rate.flops_per_second / 1e9, cost.rate.bytes_per_second / 1e9,
      100.0 * cost.rate.fraction_of_bandwidth, bandwidth / 1e9, bandwidth_source.c_str(),
      100.0 * cost.rate.fused_fraction_of_bandwidth);
}

// One CUDA measurement (eager, or replayed as a CUDA graph when
// c.cuda_graph); returns its img/s.
double run_bench_step_cuda_once(const experiment::StepBenchmarkConfig& c, bool amp) {
  const experiment::CudaStepBenchmark r = experiment::benchmark_cuda_step(c, amp);
  const std::string device = Device::cuda(0).str();
  const char* dtype = amp ? "amp-f16" : "f32";
  std::printf(
      "b3 %s %lldx%lld batch %lld %s %s %s, %s, %s: %.2f img/s (mean of %lld back-to-back steps, "
      "%.2f ms per step, after %lld warm-up; loss %.4f",
      c.model.c_str(), static_cast<long long>(c.image_size), static_cast<long long>(c.image_size),
      static_cast<long long>(c.batch_size), c.format.c_str(), dtype, c.optimizer.c_str(),
      device.c_str(), c.cuda_graph ? "CUDA graph replays" : "eager", r.images_per_second,
      static_cast<long long>(c.steps), 1e3 * r.seconds / static_cast<double>(c.steps),
      static_cast<long long>(c.warmup), r.last.loss);
  if (amp) std::printf(", loss scale %.0f", r.last.loss_scale);
  std::printf(")\n");
  std::printf(
      "device memory (b3's caching allocator): peak %.1f MiB in use over the timed steps (%.1f "
      "when the warm-up ended, "
      "%.2f MiB per image), peak %.1f MiB reserved; %llu device mallocs in all\n",
      mib(r.memory.peak_active_bytes), mib(r.active_bytes_before),
      (mib(r.memory.peak_active_bytes) - mib(r.active_bytes_before)) /
          static_cast<double>(c.batch_size),
      mib(r.memory.peak_reserved_bytes), static_cast<unsigned long long>(r.memory.device_mallocs));
  const cuda::DeviceMemoryProperties memory_properties = cuda::device_memory_properties(0);
  print_step_cost(c, amp ? 2 : 4, r.seconds / static_cast<double>(c.steps),
                  memory_properties.peak_bandwidth_bytes_per_second,
                  memory_properties.name + " theoretical peak");
  std::printf(
      "RESULT framework=b3 device=%s dtype=%s format=%s image=%lld batch=%lld img_per_s=%.3f "
      "peak_active_mib=%.1f peak_reserved_mib=%.1f peak_gpu_bytes=%llu cuda_graph=%d\n",
      device.c_str(), dtype, c.format.c_str(), static_cast<long long>(c.image_size),
      static_cast<long long>(c.batch_size), r.images_per_second, mib(r.memory.peak_active_bytes),
      mib(r.memory.peak_reserved_bytes),
      static_cast<unsigned long long>(r.memory.peak_active_bytes), c.cuda_graph ? 1 : 0);
  return r.images_per_second;
}

// With --cuda-graph: the eager step first, then the graphed one, each on a
// fresh model, and their ratio.
void run_bench_step_cuda(const experiment::StepBenchmarkConfig& c, bool amp) {
  if (!c.cuda_graph) {
    run_bench_step_cuda_once(c, amp);
    return;
  }
  experiment::StepBenchmarkConfig eager = c;
  eager.cuda_graph = false;
  const double eager_rate = run_bench_step_cuda_once(eager, amp);
  const double graph_rate = run_bench_step_cuda_once(c, amp);
  std::printf("CUDA graph: %.2f img/s replayed vs %.2f eager = %.3fx\n", graph_rate, eager_rate,
              graph_rate / eager_rate);
}

void print_cpu_memory(const experiment::StepBenchmarkConfig& c,
                      const experiment::CpuStepBenchmark& r) {
  std::printf(
      "memory: peak RSS %.1f MiB, before the first step %.1f MiB, step memory %.2f MiB per "
      "image\n",
      r.peak_rss_mib, r.rss_before_mib, r.step_mib_per_image);
  const HostMemoryStats& tensors = r.tensors;
  std::printf(
      "tensors (b3's host allocator): peak %.1f MiB in use (%.1f before the step, %.2f MiB "
      "per image), peak %.1f MiB held with the cache; %.1f%% of requests from the cache\n",
      mib(tensors.peak_active_bytes), r.tensors_before_mib,
      (mib(tensors.peak_active_bytes) - r.tensors_before_mib) / static_cast<double>(c.batch_size),
      mib(tensors.peak_reserved_bytes),
      tensors.allocations > 0 ? 100.0 * static_cast<double>(tensors.cache_hits) /
                                    static_cast<double>(tensors.allocations)
                              : 0.0);
}

// --report-every N (a soak run): every N timed steps, the window's images/s,
// the resident memory and b3's host allocator; at the end, how much each grew
// from the first report (after warm-up) to the last.
class MemoryReporter {
 public:
  explicit MemoryReporter(int64_t every) : every_(every) {}

  void after_step(int64_t step, double images_per_second) {
    if (every_ <= 0) return;
    window_rate_sum_ += images_per_second;
    if ((step + 1) % every_ != 0) return;
    const HostMemoryStats tensors = host_memory_stats();
    const Sample sample{experiment::current_rss_mib(), mib(tensors.active_bytes),
                        mib(tensors.reserved_bytes)};
    std::printf(
        "step %6lld: %.1f img/s (mean of the last %lld), RSS %.1f MiB, tensors %.1f MiB in use, "
        "%.1f MiB held; %llu allocations, %.2f%% from the cache\n",
        static_cast<long long>(step + 1), window_rate_sum_ / static_cast<double>(every_),
        static_cast<long long>(every_), sample.rss, sample.active, sample.reserved,
        static_cast<unsigned long long>(tensors.allocations),
        tensors.allocations > 0 ? 100.0 * static_cast<double>(tensors.cache_hits) /
                                      static_cast<double>(tensors.allocations)
                                : 0.0);
    std::fflush(stdout);
    window_rate_sum_ = 0.0;
    if (!first_) first_ = sample;
    last_ = sample;
  }

  void print_growth() const {
    if (!first_ || !last_) return;
    const auto growth = [](double from, double to) {
      return from > 0 ? 100.0 * (to - from) / from : 0.0;
    };
    std::printf(
        "growth from the first report to the last: RSS %.1f -> %.1f MiB (%+.2f%%), tensors held "
        "%.1f -> %.1f MiB (%+.2f%%)\n",
        first_->rss, last_->rss, growth(first_->rss, last_->rss), first_->reserved, last_->reserved,
        growth(first_->reserved, last_->reserved));
  }

 private:
  struct Sample {
    double rss = 0.0, active = 0.0, reserved = 0.0;
  };
  int64_t every_;
  double window_rate_sum_ = 0.0;
  std::optional<Sample> first_, last_;
};

void run_bench_step_cpu(const experiment::StepBenchmarkConfig& c, dist::ProcessGroup& group,
                        int64_t report_every) {
  const bool trace_steps = std::getenv("B3_STEP_TRACE") != nullptr && group.rank() == 0;
  MemoryReporter memory(group.rank() == 0 ? report_every : 0);
  const experiment::CpuStepBenchmark r = experiment::benchmark_cpu_step(
      c,
      [&](int64_t step, double rate, double cpu_seconds) {
        if (trace_steps) {
          std::fprintf(stderr, "step %lld: %.1f img/s, %.3f CPU s\n", static_cast<long long>(step),
                       rate, cpu_seconds);
        }
        memory.after_step(step, rate);
      },
      &group);
  if (group.rank() != 0) return;  // rank 0 reports
  memory.print_growth();
  const double med = r.median_images_per_second;
  const int world = r.world_size;
  if (world > 1) {
    const double hidden =
        r.median_reduce_seconds > 0
            ? std::max(0.0, 1.0 - r.median_waited_seconds / r.median_reduce_seconds)
            : 0.0;
    std::printf(
        "data parallel: %d ranks x batch %lld (global batch %lld), %s; img/s below are global; "
        "gradient all-reduce %.2f ms per step (median), %s",
        world, static_cast<long long>(c.batch_size), static_cast<long long>(c.batch_size * world),
        group.backend().c_str(), 1e3 * r.median_reduce_seconds,
        r.overlapped ? "" : "after backward (--overlap auto|on|off: ");
    if (r.overlapped) {
      std::printf("%.0f%% of it hidden behind backward (the step waited %.2f ms after backward)",
                  100.0 * hidden, 1e3 * r.median_waited_seconds);
    } else {
      std::printf("%s)", c.overlap == "off" ? "off"
                                            : "no core free for a communication thread, see "
                                              "distributed/data_parallel.h");
    }
    std::printf("; step %.1f ms\n", 1e3 * r.median_step_seconds);
  }
  std::printf(
      "b3 %s %lldx%lld batch %lld %s f32 %s, %d threads: median %.2f img/s (min %.2f, max "
      "%.2f, %lld steps after %lld warm-up; loss %.4f); CPU time %.3f s per step (median)\n",
      c.model.c_str(), static_cast<long long>(c.image_size), static_cast<long long>(c.image_size),
      static_cast<long long>(c.batch_size), c.format.c_str(), c.optimizer.c_str(), c.threads, med,
      *std::min_element(r.images_per_second.begin(), r.images_per_second.end()),
      *std::max_element(r.images_per_second.begin(), r.images_per_second.end()),
      static_cast<long long>(c.steps), static_cast<long long>(c.warmup), r.last_loss,
      r.median_cpu_seconds);
  print_cpu_memory(c, r);
  print_step_cost(c, 4, static_cast<double>(c.batch_size * world) / med,
                  measure_host_copy_bandwidth(c.threads),
                  "host copy bandwidth, " + std::to_string(c.threads) + " threads, best of 3");
  std::printf(
      "RESULT framework=b3 format=%s image=%lld batch=%lld img_per_s=%.3f peak_rss_mib=%.1f "
      "mib_per_image=%.3f cpu_s_per_step=%.4f world=%d\n",
      c.format.c_str(), static_cast<long long>(c.image_size), static_cast<long long>(c.batch_size),
      med, r.peak_rss_mib, r.step_mib_per_image, r.median_cpu_seconds, world);
}

void run_bench_step(const BenchStepArgs& args) {
  omp_set_num_threads(args.config.threads);
  const bool amp = resolve_amp(args.amp, args.device == "cuda", "b3 bench-step");
  if (args.device == "cuda") {
    if (dist::read_launch_environment().world_size > 1) {
      throw std::invalid_argument(
          "bench-step --device cuda under mpirun is not built (b3 train and b3 sweep train "
          "data-parallel on GPUs); run it as one process, or with --device cpu");
    }
    run_bench_step_cuda(args.config, amp);
    return;
  }
  // The CPU step in the process group of this launch: a world of one
  // without mpirun; a failing rank of a larger world ends the job.
  const std::unique_ptr<dist::ProcessGroup> group = dist::init_process_group();
  try {
    run_bench_step_cpu(args.config, *group, args.report_every);
  } catch (const std::exception& e) {
    if (group->size() == 1) throw;
    dist::abort_job(*group, e.what());
  }
}

}  // namespace

void register_bench_step_command(CLI::App& app) {
  auto args = std::make_shared<BenchStepArgs>();
  experiment::StepBenchmarkConfig& c = args->config;
  CLI::App* cmd = app.add_subcommand(
      "bench-step", "time train_step (forward, loss, backward, optimizer) on synthetic data");
  add_workload_options(cmd, c, "steps");
  cmd->add_option("--optimizer", c.optimizer, "sgd (lr 0.01, momentum 0.9) or adam (lr 5e-4)")
      ->check(CLI::IsMember({"sgd", "adam"}));
  cmd->add_option("--device", args->device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  const AmpOption amp(cmd);
  add_bucket_option(cmd, c.bucket_mb);
  cmd->add_option("--report-every", args->report_every,
                  "CPU soak run: every N timed steps print images/s, resident memory and the host "
                  "allocator's figures, and at the end how much they grew (0: off)")
      ->check(non_negative());
  cmd->add_option("--overlap", c.overlap,
                  "data parallel: all-reduce buckets during backward on a communication thread: "
                  "auto (when a core is free for it), on, off")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->capture_default_str();
  cmd->add_flag("--cuda-graph", c.cuda_graph,
                "with --device cuda: also time the step captured once and replayed as a CUDA "
                "graph, beside the eager step (unverified on a GPU so far)");
  cmd->callback([args, amp] {
    if (args->config.cuda_graph && args->device != "cuda") {
      throw std::invalid_argument(
          "bench-step: --cuda-graph needs --device cuda (a CUDA graph runs on a GPU)");
    }
    args->amp = amp.choice();
    run_bench_step(*args);
  });
}

}  // namespace b3::cli
