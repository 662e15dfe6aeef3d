// `b3 maxbatch`: the largest batch size whose training step fits in GPU memory
// for the configured model, image size and layout (the seed experiment found
// 515 on a 16 GB V100 at 224x224, f16).
//
// A probe builds a fresh model on the GPU (channels_last weights for NHWC),
// Adam and, in mixed precision (the default, --no-amp for f32), a
// GradScaler, runs --steps train_step() calls (train/trainer.h, the step
// training runs) on a synthetic batch and reports
// whether it ran out of memory (an exception whose message says "out of
// memory", which the CUDA allocator's error does, or a cuDNN/cuBLAS
// allocation failure; any other error stops the search).
// report::search_largest doubles from --start until a probe fails, then
// bisects. Each probe frees everything it allocated and gives the
// allocator's cached blocks back to the device before the next one starts.
// The result comes with the allocator's peak memory at that batch: bytes in
// tensors (peak active) and bytes held from the device (peak reserved).
//
// GPU only: on the CPU there is no clean out-of-memory boundary to find
// (memory is virtual; the operating system swaps, or kills the process,
// rather than failing an allocation), so `--device cpu` explains this and
// exits non-zero instead of searching.
#include <cstdio>
#include <map>
#include <memory>

#include "cli/commands.h"
#include "cli/options.h"
#include "experiment/gpu_timing.h"
#include "experiment/nvml.h"
#include "experiment/report.h"
#include "models/mobilenet_v3.h"
#include "optim/grad_scaler.h"
#include "tensor/cuda_allocator.h"
#include "tensor/random.h"
#include "train/setup.h"
#include "train/trainer.h"

namespace b3::cli {

namespace {

struct MaxBatchArgs {
  std::string device = "cuda";
  std::string model = "mobilenet_v3_large";
  int64_t image_size = 224;
  std::string format = "nhwc";
  int64_t start = 256;
  int64_t limit = 1 << 16;
  int64_t steps = 2;
  std::optional<bool> amp;  // unset: on (a GPU's default)
};

// Peak device memory of one probe (the caching allocator's statistics).
struct ProbeMemory {
  double peak_active_bytes = 0.0;    // most bytes handed out to tensors at once
  double peak_reserved_bytes = 0.0;  // most bytes held from the device (active + cached)
};

// One probe: can `steps` training steps at `batch` run? False on
// out-of-memory. A fresh model, optimizer, loss scaler and batch live only
// inside the probe; afterwards the allocator's cached blocks go back to the
// device, so each probe starts from the same empty allocator and a failed
// probe leaves nothing behind for the next.
bool step_fits(int64_t batch, const MaxBatchArgs& args, const Device& device, bool amp,
               ProbeMemory& memory) {
  experiment::synchronize(device);
  cuda::reset_peak_memory(device.index);
  bool fits = false;
  try {
    {
      MobileNetV3Options options;
      options.arch = parse_mobilenet_v3_arch(args.model);
      options.num_classes = 10;
      MobileNetV3 model(options);
      const MemoryFormat format = parse_memory_format(args.format);
      prepare_model(model, device, format);
      // Adam with PyTorch's default lr (1e-3).
      const std::unique_ptr<Optimizer> optimizer = make_optimizer({"adam", 1e-3}, model);
      std::optional<GradScaler> scaler;
      if (amp) scaler.emplace(device);
      Generator gen(0);
      LabeledBatch data;
      data.images = rand({batch, 3, args.image_size, args.image_size}, gen,
                         TensorOptions().with_format(format))
                        .to(device);
      data.labels = randint(10, {batch}, gen).to(device);
      StepOptions step;
      step.scaler = scaler ? &*scaler : nullptr;
      step.read_results = false;  // queued; a failure surfaces at the synchronization
      for (int64_t i = 0; i < args.steps; ++i) train_step(model, *optimizer, data, step);
      // Steps run asynchronously: a failure inside them surfaces here, while
      // the probe's tensors are still alive.
      experiment::synchronize(device);
    }
    const cuda::MemoryStats stats = cuda::memory_stats(device.index);
    memory.peak_active_bytes = static_cast<double>(stats.peak_active_bytes);
    memory.peak_reserved_bytes = static_cast<double>(stats.peak_reserved_bytes);
    fits = true;
  } catch (const std::exception& e) {
    if (!experiment::is_out_of_memory(e)) throw;
  }
  // Everything of the probe is released by now (the exception unwound its
  // scope); give the cached segments back so the next probe starts clean.
  cuda::clear_cache(device.index);
  return fits;
}

double gib(double bytes) { return bytes / static_cast<double>(1 << 30); }

void run_maxbatch(const MaxBatchArgs& args) {
  if (args.device == "cpu") {
    throw std::invalid_argument(
        "b3 maxbatch needs a GPU: it finds the largest batch before CUDA runs out of memory. On "
        "the CPU there is no such boundary to search (memory is virtual; the operating system "
        "swaps or kills the process instead of failing an allocation cleanly). Run it with "
        "--device cuda on a machine with a GPU and b3 built with the CUDA backend (-DB3_CUDA=ON); "
        "on the CPU, the largest usable batch in b3 sweep is the training-set size it reports");
  }
  const Device device = Device::cuda(0);
  require_device_available(device, "b3 maxbatch --device cuda");
  const bool amp = resolve_amp(args.amp, true, "b3 maxbatch");
  std::string why_not;
  if (auto nvml = gpu::Nvml::open(why_not)) {
    if (auto memory = nvml->memory(device.index)) {
      std::printf("GPU: %s, %.1f GiB total, %.1f GiB free before the search\n",
                  nvml->device_name(device.index).c_str(), memory->total_bytes / (1 << 30),
                  memory->free_bytes / (1 << 30));
    }
  }
  std::printf(
      "searching the largest batch: %s, %lldx%lld, %s, %s, Adam, %lld training steps per probe\n",
      args.model.c_str(), static_cast<long long>(args.image_size),
      static_cast<long long>(args.image_size), args.format.c_str(),
      report::precision_name(amp).c_str(), static_cast<long long>(args.steps));
  std::printf("precision: %s\n", report::precision_description(amp).c_str());
  std::map<int64_t, ProbeMemory> memory_of;  // batches that fit
  const report::SearchResult result = report::search_largest(
      [&](int64_t batch) {
        ProbeMemory memory;
        const bool fits = step_fits(batch, args, device, amp, memory);
        if (fits) {
          memory_of[batch] = memory;
          std::printf("  batch %6lld: fits (peak %.2f GiB in tensors, %.2f GiB reserved)\n",
                      static_cast<long long>(batch), gib(memory.peak_active_bytes),
                      gib(memory.peak_reserved_bytes));
        } else {
          std::printf("  batch %6lld: out of memory\n", static_cast<long long>(batch));
        }
        std::fflush(stdout);
        return fits;
      },
      args.start, args.limit);
  if (result.largest == 0) {
    std::printf("not even batch 1 fits\n");
    return;
  }
  if (result.largest == args.limit) {
    std::printf("largest batch: at least %lld (the --limit; raise it to search further)\n",
                static_cast<long long>(result.largest));
  } else {
    std::printf("largest batch that fits: %lld (%zu probes)\n",
                static_cast<long long>(result.largest), result.probes.size());
  }
  const auto found = memory_of.find(result.largest);
  if (found != memory_of.end()) {
    std::printf(
        "peak device memory at batch %lld: %.2f GiB in tensors (the allocator's peak active "
        "bytes), %.2f GiB reserved from the device (peak; the cached blocks included)\n",
        static_cast<long long>(result.largest), gib(found->second.peak_active_bytes),
        gib(found->second.peak_reserved_bytes));
  }
}

}  // namespace

void register_maxbatch_command(CLI::App& app) {
  auto args = std::make_shared<MaxBatchArgs>();
  CLI::App* cmd = app.add_subcommand(
      "maxbatch", "the largest batch whose training step fits in GPU memory (GPU only)");
  cmd->add_option("--device", args->device, "cuda (cpu explains why it cannot search)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  cmd->add_option("--model", args->model, "mobilenet_v3_large or mobilenet_v3_small")
      ->check(CLI::IsMember({"mobilenet_v3_large", "mobilenet_v3_small"}))
      ->capture_default_str();
  cmd->add_option("--image-size", args->image_size, "image height and width")
      ->check(CLI::Range(int64_t{8}, int64_t{4096}))
      ->capture_default_str();
  cmd->add_option("--format", args->format, "memory format: nchw or nhwc")
      ->check(CLI::IsMember({"nchw", "nhwc"}))
      ->capture_default_str();
  cmd->add_option("--start", args->start, "first batch size tried (then doubled)")
      ->check(CLI::Validator([](std::string& s) { return report::integer_at_least_problem(s, 1); },
                             "INT>=1", "at least 1"))
      ->capture_default_str();
  cmd->add_option("--limit", args->limit, "largest batch size tried")
      ->check(CLI::Validator([](std::string& s) { return report::integer_at_least_problem(s, 1); },
                             "INT>=1", "at least 1"))
      ->capture_default_str();
  const AmpOption amp(cmd);
  cmd->add_option("--steps", args->steps, "training steps per probe")
      ->check(CLI::Validator([](std::string& s) { return report::integer_at_least_problem(s, 1); },
                             "INT>=1", "at least 1"))
      ->capture_default_str();
  cmd->callback([args, amp] {
    args->amp = amp.choice();
    run_maxbatch(*args);
  });
}

}  // namespace b3::cli
