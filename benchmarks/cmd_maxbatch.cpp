// `b3 maxbatch`: the largest batch size whose training step fits in GPU memory
// for the configured model, image size and layout (the seed experiment found
// 515 on a 16 GB V100 at 224x224, f16).
//
// A probe builds the model and optimizer, runs --steps training steps on a
// synthetic batch and reports whether it ran out of memory (an exception
// whose message says "out of memory", which the CUDA allocator's error does;
// any other error stops the search). report::search_largest doubles from
// --start until a probe fails, then bisects. Each probe frees everything it
// allocated before the next one starts.
//
// GPU only: on the CPU there is no clean out-of-memory boundary to find
// (memory is virtual; the operating system swaps, or kills the process,
// rather than failing an allocation), so `--device cpu` explains this and
// exits non-zero instead of searching.
#include <cstdio>
#include <memory>

#include "benchmarks/commands.h"
#include "benchmarks/nvml.h"
#include "benchmarks/report.h"
#include "models/mobilenet_v3.h"
#include "optim/adam.h"
#include "tensor/random.h"
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
};

bool is_out_of_memory(const std::exception& e) {
  const std::string what = e.what();
  return what.find("out of memory") != std::string::npos ||
         what.find("OUT_OF_MEMORY") != std::string::npos;
}

// One probe: can a training step at `batch` run? False on out-of-memory.
bool step_fits(int64_t batch, const MaxBatchArgs& args, const Device& device) {
  try {
    MobileNetV3Options options;
    options.arch = parse_mobilenet_v3_arch(args.model);
    options.num_classes = 10;
    MobileNetV3 model(options);
    if (device.is_cuda()) {
      throw std::runtime_error(
          "b3 maxbatch: the model cannot be moved to the GPU yet (Module::to(Device) comes with "
          "the CUDA backend)");
    }
    Adam optimizer(model.parameters(), AdamOptions{});
    Generator gen(0);
    const MemoryFormat format =
        args.format == "nhwc" ? MemoryFormat::channels_last : MemoryFormat::contiguous;
    LabeledBatch data;
    data.images =
        rand({batch, 3, args.image_size, args.image_size}, gen, TensorOptions().with_format(format))
            .to(device);
    data.labels = randint(10, {batch}, gen).to(device);
    for (int64_t i = 0; i < args.steps; ++i) train_step(model, optimizer, data);
    return true;
  } catch (const std::exception& e) {
    if (is_out_of_memory(e)) return false;
    throw;
  }
}

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
  std::string why_not;
  if (auto nvml = gpu::Nvml::open(why_not)) {
    if (auto memory = nvml->memory(device.index)) {
      std::printf("GPU: %s, %.1f GiB total, %.1f GiB free before the search\n",
                  nvml->device_name(device.index).c_str(), memory->total_bytes / (1 << 30),
                  memory->free_bytes / (1 << 30));
    }
  }
  std::printf("searching the largest batch: %s, %lldx%lld, %s, %lld training steps per probe\n",
              args.model.c_str(), static_cast<long long>(args.image_size),
              static_cast<long long>(args.image_size), args.format.c_str(),
              static_cast<long long>(args.steps));
  const report::SearchResult result = report::search_largest(
      [&](int64_t batch) {
        const bool fits = step_fits(batch, args, device);
        std::printf("  batch %6lld: %s\n", static_cast<long long>(batch),
                    fits ? "fits" : "out of memory");
        std::fflush(stdout);
        return fits;
      },
      args.start, args.limit);
  if (result.largest == 0) {
    std::printf("not even batch 1 fits\n");
  } else if (result.largest == args.limit) {
    std::printf("largest batch: at least %lld (the --limit; raise it to search further)\n",
                static_cast<long long>(result.largest));
  } else {
    std::printf("largest batch that fits: %lld (%zu probes)\n",
                static_cast<long long>(result.largest), result.probes.size());
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
  cmd->add_option("--steps", args->steps, "training steps per probe")
      ->check(CLI::Validator([](std::string& s) { return report::integer_at_least_problem(s, 1); },
                             "INT>=1", "at least 1"))
      ->capture_default_str();
  cmd->callback([args] { run_maxbatch(*args); });
}

}  // namespace b3::cli
