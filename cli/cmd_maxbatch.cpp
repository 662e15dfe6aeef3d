// `b3 maxbatch`: the largest batch size whose training step fits in GPU
// memory (experiment/maxbatch.h: the probes, each a few train_step() calls,
// and the doubling-then-bisecting search). This file parses the options and
// prints the GPU, every probe and the result. GPU only: --device cpu explains
// why and exits non-zero.
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/range_checks.h"
#include "experiment/maxbatch.h"
#include "experiment/nvml.h"
#include "experiment/report.h"
#include "train/setup.h"

namespace b3::cli {

namespace {

struct MaxBatchArgs {
  std::string device = "cuda";
  experiment::MaxBatchConfig config;
  std::optional<bool> amp;  // unset: on (a GPU's default)
};

double gib(double bytes) { return bytes / static_cast<double>(1 << 30); }

void print_gpu(const Device& device) {
  std::string why_not;
  if (auto nvml = gpu::Nvml::open(why_not)) {
    if (auto memory = nvml->memory(device.index)) {
      std::printf("GPU: %s, %.1f GiB total, %.1f GiB free before the search\n",
                  nvml->device_name(device.index).c_str(), memory->total_bytes / (1 << 30),
                  memory->free_bytes / (1 << 30));
    }
  }
}

void print_probe(int64_t batch, bool fits, const experiment::ProbeMemory& memory) {
  if (fits) {
    std::printf("  batch %6lld: fits (peak %.2f GiB in tensors, %.2f GiB reserved)\n",
                static_cast<long long>(batch), gib(memory.peak_active_bytes),
                gib(memory.peak_reserved_bytes));
  } else {
    std::printf("  batch %6lld: out of memory\n", static_cast<long long>(batch));
  }
  std::fflush(stdout);
}

void print_result(const experiment::MaxBatchConfig& config,
                  const experiment::MaxBatchResult& result) {
  const int64_t largest = result.search.largest;
  if (largest == 0) {
    std::printf("not even batch 1 fits\n");
    return;
  }
  if (largest == config.limit) {
    std::printf("largest batch: at least %lld (the --limit; raise it to search further)\n",
                static_cast<long long>(largest));
  } else {
    std::printf("largest batch that fits: %lld (%zu probes)\n", static_cast<long long>(largest),
                result.search.probes.size());
  }
  const auto found = result.memory_of.find(largest);
  if (found != result.memory_of.end()) {
    std::printf(
        "peak device memory at batch %lld: %.2f GiB in tensors (the allocator's peak active "
        "bytes), %.2f GiB reserved from the device (peak; the cached blocks included)\n",
        static_cast<long long>(largest), gib(found->second.peak_active_bytes),
        gib(found->second.peak_reserved_bytes));
  }
}

void run_maxbatch(MaxBatchArgs args) {
  const Device device = experiment::maxbatch_device(args.device);
  experiment::MaxBatchConfig& config = args.config;
  config.amp = resolve_amp(args.amp, true, "b3 maxbatch");
  print_gpu(device);
  std::printf(
      "searching the largest batch: %s, %lldx%lld, %s, %s, Adam, %lld training steps per probe\n",
      config.model.c_str(), static_cast<long long>(config.image_size),
      static_cast<long long>(config.image_size), config.format.c_str(),
      report::precision_name(config.amp).c_str(), static_cast<long long>(config.steps));
  std::printf("precision: %s\n", report::precision_description(config.amp).c_str());
  print_result(config, experiment::find_max_batch(config, device, print_probe));
}

}  // namespace

void register_maxbatch_command(CLI::App& app) {
  auto args = std::make_shared<MaxBatchArgs>();
  experiment::MaxBatchConfig& c = args->config;
  CLI::App* cmd = app.add_subcommand(
      "maxbatch", "the largest batch whose training step fits in GPU memory (GPU only)");
  cmd->add_option("--device", args->device, "cuda (cpu explains why it cannot search)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  add_model_option(cmd, c.model)->capture_default_str();
  cmd->add_option("--image-size", c.image_size, "image height and width")
      ->check(between(8, 4096))
      ->capture_default_str();
  cmd->add_option("--format", c.format, "memory format: nchw or nhwc")
      ->check(CLI::IsMember({"nchw", "nhwc"}))
      ->capture_default_str();
  cmd->add_option("--start", c.start, "first batch size tried (then doubled)")
      ->check(integer_at_least(1))
      ->capture_default_str();
  cmd->add_option("--limit", c.limit, "largest batch size tried")
      ->check(integer_at_least(1))
      ->capture_default_str();
  const AmpOption amp(cmd);
  cmd->add_option("--steps", c.steps, "training steps per probe")
      ->check(integer_at_least(1))
      ->capture_default_str();
  cmd->callback([args, amp] {
    args->amp = amp.choice();
    run_maxbatch(*args);
  });
}

}  // namespace b3::cli
