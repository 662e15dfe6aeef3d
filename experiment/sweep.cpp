// The sweep's steps: its checks, the CPU's defaults, the interleaved order
// and the run loop (see sweep.h).
#include "experiment/sweep.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <memory>
#include <random>
#include <stdexcept>
#include <thread>

#include "data/sources.h"
#include "distributed/sharding.h"
#include "experiment/report.h"

namespace b3::experiment {

namespace {

// Gives every run enough epochs for --steps (train() stops at max_steps).
int64_t epochs_for_steps(int64_t steps, int64_t batch, int64_t train_size) {
  const int64_t per_epoch = std::max<int64_t>(1, train_size / batch);
  return std::max<int64_t>(1, (steps + per_epoch - 1) / per_epoch);
}

// Every batch size must give at least one step: checked before any run.
void check_batch_sizes_fit(const SweepConfig& config, int64_t train_size) {
  const TrainRunConfig& base = config.base;
  const std::string per_rank =
      config.world_size > 1
          ? " per rank (its shard of " + std::to_string(config.world_size) + " ranks)"
          : "";
  for (int64_t b : config.batch_sizes) {
    if (b <= train_size) continue;
    throw std::invalid_argument(
        "--batch-sizes: batch size " + std::to_string(b) + " cannot fit: this run has only " +
        std::to_string(train_size) + " training images" + per_rank + " (after the " +
        std::to_string(base.validation_size) + "-image validation split" +
        (base.train_limit > 0 ? " and --train-limit " + std::to_string(base.train_limit) : "") +
        "), so the largest batch size is " + std::to_string(train_size));
  }
}

// Device, dtype, layout and the device's name; on a GPU the NVML handle that
// samples it during the runs (nothing, and a warning, without NVML).
SweepContext make_context(const SweepConfig& config, const Device& device,
                          std::unique_ptr<gpu::Nvml>& nvml, const SweepObserver& observer) {
  SweepContext context;
  context.device = device.str();
  context.dtype = run_dtype(config.base);
  context.layout = layout_name(config.base.format);
  context.device_name = report::cpu_description();
  if (!device.is_cuda()) {
    context.gpu_note = "not sampled (CPU run)";
    return context;
  }
  std::string why_not;
  nvml = gpu::Nvml::open(why_not);
  if (nvml) {
    context.device_name = nvml->device_name(device.index);
    context.gpu_note = "sampled by NVML every 200 ms during each run";
  } else {
    context.device_name = "CUDA device " + std::to_string(device.index);
    context.gpu_note = "not sampled: " + why_not;
    if (observer.on_warning) observer.on_warning(why_not);
  }
  return context;
}

// The discarded run before the first one: first-touch costs, caches, cuDNN's
// algorithm search.
void run_warmup(const SweepPlan& plan, const SweepObserver& observer, dist::ProcessGroup* group) {
  TrainRunConfig warmup = plan.config.base;
  warmup.batch_size = plan.config.batch_sizes.front();
  warmup.steps = plan.config.warmup_steps;
  warmup.epochs = epochs_for_steps(warmup.steps, warmup.batch_size, plan.train_size);
  warmup.evaluate_test = false;
  warmup.evaluate_validation = false;
  if (observer.on_warmup) observer.on_warmup(warmup.batch_size, warmup.steps);
  run_training(warmup, "", group);
}

// One run of the plan, sampled by NVML when there is one.
RunRecord run_one(const SweepPlan& plan, const PlannedRun& planned, const gpu::Nvml* nvml,
                  const Device& device, dist::ProcessGroup* group, TrainRunResult& result) {
  TrainRunConfig config = plan.config.base;
  config.batch_size = planned.batch_size;
  config.seed = planned.seed;
  if (config.steps > 0)
    config.epochs = epochs_for_steps(config.steps, planned.batch_size, plan.train_size);
  RunRecord record;
  record.order = planned.order;
  record.batch_size = planned.batch_size;
  record.global_batch_size = planned.batch_size * plan.config.world_size;
  record.repeat = planned.repeat;
  record.seed = planned.seed;
  record.started = utc_now();
  std::unique_ptr<gpu::GpuSampler> sampler;
  if (nvml != nullptr) {
    sampler = std::make_unique<gpu::GpuSampler>(*nvml, device.index);
    sampler->start();
  }
  try {
    result = run_training(config, "", group);
  } catch (const std::exception& e) {
    const std::string what = e.what();
    const std::string hint = what.find("out of memory") != std::string::npos
                                 ? " (b3 maxbatch finds the largest batch that fits)"
                                 : "";
    throw std::runtime_error("run " + std::to_string(record.order) + " (batch " +
                             std::to_string(planned.batch_size) + ", repeat " +
                             std::to_string(planned.repeat) + ") failed: " + what + hint);
  }
  if (sampler) record.gpu = gpu::summarize_samples(sampler->stop());
  record.steps = result.steps;
  record.images = result.train_images;
  record.train_seconds = result.train_seconds;
  record.images_per_second = result.images_per_second;
  if (!result.epochs.empty() && result.epochs.back().validation)
    record.validation_accuracy = result.epochs.back().validation->accuracy;
  if (result.test) {
    record.test_accuracy = result.test->accuracy;
    record.test_seconds = result.test->seconds;
    record.test_images = result.test->images;
  }
  if (result.test_recalibrated)
    record.test_recalibrated_accuracy = result.test_recalibrated->accuracy;
  return record;
}

}  // namespace

void check_sweep_settings(const SweepConfig& config) {
  config_device(config.base);
  if (config.batch_sizes.empty()) throw std::invalid_argument("--batch-sizes: the list is empty");
  if (config.repeats < 1)
    throw std::invalid_argument("--repeats must be at least 1, got " +
                                std::to_string(config.repeats));
}

std::string make_cpu_sized_sweep(SweepConfig& config, const SweepOptionsGiven& given) {
  TrainRunConfig& base = config.base;
  std::string notice =
      make_cpu_sized(base, given.image_size, given.epochs || base.steps > 0, given.train_limit);
  if (base.device != "cpu") return notice;
  std::string more;
  if (!given.validation_size) {
    base.validation_size = 1000;
    more += " a 1,000-image validation split";
  }
  if (!given.test_limit) {
    base.test_limit = 1000;
    more += std::string(more.empty() ? "" : ",") + " the first 1,000 test images";
  }
  if (!more.empty()) {
    notice += (notice.empty() ? "CPU sweep: defaults scaled down to" : ";") + more +
              " (set --validation-size, --test-limit)";
  }
  return notice;
}

std::vector<PlannedRun> interleaved_runs(const std::vector<int64_t>& batch_sizes, int64_t repeats,
                                         bool shuffle, uint64_t seed) {
  std::vector<PlannedRun> runs;
  std::mt19937_64 order_generator(seed);
  for (int64_t repeat = 1; repeat <= repeats; ++repeat) {
    std::vector<int64_t> round = batch_sizes;
    if (shuffle) std::shuffle(round.begin(), round.end(), order_generator);
    for (int64_t batch : round) {
      runs.push_back({static_cast<int64_t>(runs.size()) + 1, batch, repeat,
                      seed + static_cast<uint64_t>(repeat - 1)});
    }
  }
  return runs;
}

SweepPlan plan_sweep(const SweepConfig& config, bool quiet) {
  check_sweep_settings(config);
  SweepPlan plan;
  plan.config = config;
  TrainRunConfig& base = plan.config.base;
  base.progress = false;
  base.evaluate_test = config.test;
  base.evaluate_validation = config.validation;
  base.evaluate_test_batch_statistics = false;
  if (config.world_size < 1)
    throw std::invalid_argument("sweep: world size " + std::to_string(config.world_size));
  // The data is looked for once, downloaded at most once, and its absence
  // told once: every run reads what this finds. (The quiet ranks of a
  // data-parallel sweep neither download nor tell; they look in each run.)
  if (!quiet) base.data = resolve_data_spec(base.data);
  // Each rank trains on its shard (drop_last), so a batch must fit in one.
  plan.train_size = dist::shard_size(training_set_size(base, quiet), 0, config.world_size);
  check_batch_sizes_fit(plan.config, plan.train_size);
  plan.runs = interleaved_runs(config.batch_sizes, config.repeats, config.shuffle, base.seed);
  return plan;
}

SweepResult run_sweep(const SweepPlan& plan, const SweepObserver& observer,
                      dist::ProcessGroup* group) {
  const int world = group != nullptr ? group->size() : 1;
  if (world != plan.config.world_size) {
    throw std::invalid_argument("run_sweep: the plan is for " +
                                std::to_string(plan.config.world_size) +
                                " processes, the group has " + std::to_string(world));
  }
  const Device device = config_device(plan.config.base);
  std::unique_ptr<gpu::Nvml> nvml;
  SweepResult sweep;
  sweep.context = make_context(plan.config, device, nvml, observer);
  if (plan.config.warmup_steps > 0) run_warmup(plan, observer, group);
  const int64_t total = static_cast<int64_t>(plan.runs.size());
  for (const PlannedRun& planned : plan.runs) {
    if (!sweep.runs.empty() && plan.config.cooldown_seconds > 0) {
      std::this_thread::sleep_for(std::chrono::duration<double>(plan.config.cooldown_seconds));
    }
    TrainRunResult result;
    sweep.runs.push_back(run_one(plan, planned, nvml.get(), device, group, result));
    if (sweep.context.data.empty()) {
      sweep.context.data = result.data_description;
      sweep.context.data_short = result.synthetic ? "synthetic images" : "real images";
      sweep.context.parameters = result.parameters;
    }
    if (observer.on_run) observer.on_run(sweep.runs.back(), total);
  }
  sweep.summary = summarize_runs(sweep.runs, plan.config.batch_sizes);
  return sweep;
}

std::string run_dtype(const TrainRunConfig& config) {
  return amp_enabled(config) ? "mixed f16 (autocast, f32 master weights, loss scaling)" : "f32";
}

std::string layout_name(const std::string& format) {
  return format == "nhwc" ? "nhwc (channels_last)" : "nchw (contiguous)";
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm parts{};
  gmtime_r(&now, &parts);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &parts);
  return text;
}

}  // namespace b3::experiment
