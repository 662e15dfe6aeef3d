// `b3 layout`: what memory layout does to one training step, at one batch size.
//
// The step is train_step() (train/trainer.h: forward, cross-entropy, backward,
// Adam), the same the training loop runs, on synthetic tensors made once per
// measurement, so data loading plays no part. The factors:
//   layout     NCHW (contiguous) or NHWC (channels_last) input and activations
//   channels   MobileNetV3Options::channel_divisor 1, 8 (torchvision) or 16
//   batch      as given, or padded up to a multiple of 8 with extra images
//              (images/s counts only the real ones: padding must pay for itself)
//   storage    aligned (the allocator's default), or deliberately misaligned by
//              --misalign-bytes: the input batch and every parameter.
//              Gradients, Adam's state and activations keep the default
//              alignment: ops allocate them, and there is (by design) no
//              global allocator setting to change that.
// By default one factor is changed at a time from the baseline (NHWC, divisor
// 8, batch as given, aligned); --full runs all 24 combinations. Configurations
// are interleaved round-robin over --repeats, each measurement builds a fresh
// model and optimizer, runs --warmup steps, then times --steps steps.
//
// On a GPU (--device cuda) each fresh model moves to the device, its
// convolution weights laid out in the variant's format (model.to(device),
// model.to(memory_format)), in mixed precision by default (f16 autocast, f32
// master weights, GradScaler; --no-amp for plain f32), with Adam's fused CUDA
// update. Steps queue without reading the loss back
// (experiment/step_timing.h); the compute stream is synchronized before the
// clock starts and before it stops. Misaligned parameters are the f32 master
// weights; autocast's f16 copies of them are made by the ops with the
// default alignment. On the CPU the weights stay NCHW as built and only the
// input takes the variant's layout.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>

#include "cli/commands.h"
#include "cli/options.h"
#include "experiment/plot.h"
#include "experiment/report.h"
#include "experiment/step_timing.h"
#include "models/mobilenet_v3.h"
#include "optim/grad_scaler.h"
#include "tensor/random.h"
#include "train/setup.h"
#include "train/trainer.h"

namespace b3::cli {

namespace {

struct LayoutArgs {
  std::string device = "cpu";
  std::string model = "mobilenet_v3_large";
  int64_t batch_size = 127;
  int64_t image_size = 0;  // 0: 224 on a GPU, 32 on the CPU
  int64_t steps = 0;       // 0: 10 on a GPU, 5 on the CPU
  int64_t warmup = 2;
  int64_t repeats = 3;
  int64_t misalign_bytes = 4;
  bool full = false;
  std::string out = "layout-results";
  std::optional<bool> amp;  // unset: on for cuda, off for cpu
};

struct Variant {
  std::string name;
  MemoryFormat format = MemoryFormat::channels_last;
  int64_t channel_divisor = 8;
  bool pad_batch = false;
  bool misaligned = false;
};

struct VariantResult {
  Variant variant;
  int64_t batch = 0;  // images per step, padding included
  int64_t parameters = 0;
  std::vector<double> step_seconds, real_images_per_second;
};

std::string describe(const Variant& v) {
  return std::string(v.format == MemoryFormat::channels_last ? "nhwc" : "nchw") + ", div " +
         std::to_string(v.channel_divisor) + ", " + (v.pad_batch ? "padded" : "unpadded") + ", " +
         (v.misaligned ? "misaligned" : "aligned");
}

std::vector<Variant> make_variants(bool full) {
  std::vector<Variant> variants;
  if (full) {
    for (MemoryFormat f : {MemoryFormat::channels_last, MemoryFormat::contiguous})
      for (int64_t d : {8, 1, 16})
        for (bool pad : {false, true})
          for (bool mis : {false, true}) variants.push_back({"", f, d, pad, mis});
    for (Variant& v : variants) v.name = describe(v);
    return variants;
  }
  variants.push_back({"baseline", MemoryFormat::channels_last, 8, false, false});
  variants.push_back({"nchw", MemoryFormat::contiguous, 8, false, false});
  variants.push_back({"channels / 1", MemoryFormat::channels_last, 1, false, false});
  variants.push_back({"channels / 16", MemoryFormat::channels_last, 16, false, false});
  variants.push_back({"batch padded to x8", MemoryFormat::channels_last, 8, true, false});
  variants.push_back({"misaligned", MemoryFormat::channels_last, 8, false, true});
  return variants;
}

// A copy of `t` in fresh storage that starts `bytes` past the alignment boundary.
Tensor misaligned_copy(const Tensor& t, size_t bytes) {
  AllocationOptions allocation = default_allocation(t.device());
  allocation.misalignment = bytes;
  TensorOptions options =
      TensorOptions(t.dtype())
          .with_device(t.device())
          .with_format(t.dim() == 4 ? t.suggest_memory_format() : MemoryFormat::contiguous)
          .with_allocation(allocation);
  Tensor copy = empty(t.shape(), options);
  copy.copy_(t);
  return copy;
}

void measure(VariantResult& result, const LayoutArgs& args, const Device& device, bool amp,
             uint64_t seed) {
  const Variant& v = result.variant;
  MobileNetV3Options options;
  options.arch = parse_mobilenet_v3_arch(args.model);
  options.num_classes = 10;
  options.channel_divisor = v.channel_divisor;
  options.seed = seed;
  MobileNetV3 model(options);
  if (device.is_cuda()) prepare_model(model, device, v.format);
  if (v.misaligned) {
    for (auto& [name, p] : model.named_parameters())
      p.set_data(misaligned_copy(p, static_cast<size_t>(args.misalign_bytes)));
  }
  result.parameters = model.parameter_count();
  // Adam with PyTorch's default lr (1e-3).
  const std::unique_ptr<Optimizer> optimizer = make_optimizer({"adam", 1e-3}, model);
  std::optional<GradScaler> scaler;
  if (amp) scaler.emplace(device);
  Generator gen(seed);
  LabeledBatch batch;
  Tensor images = rand({result.batch, 3, args.image_size, args.image_size}, gen,
                       TensorOptions(DType::f32).with_format(v.format));
  batch.images = images.to(device);
  if (v.misaligned)
    batch.images = misaligned_copy(batch.images, static_cast<size_t>(args.misalign_bytes));
  batch.labels = randint(10, {result.batch}, gen).to(device);
  const experiment::TimedSteps timed = experiment::time_train_steps(
      model, *optimizer, batch, scaler ? &*scaler : nullptr, args.warmup, args.steps);
  result.step_seconds.push_back(timed.seconds_per_step);
  result.real_images_per_second.push_back(static_cast<double>(args.batch_size) /
                                          timed.seconds_per_step);
}

void run_layout(LayoutArgs args) {
  const Device device = args.device == "cuda" ? Device::cuda(0) : Device::cpu();
  require_device_available(device, "b3 layout --device " + args.device);
  const bool amp = resolve_amp(args.amp, device.is_cuda(), "b3 layout");
  const std::string dtype_text = report::precision_name(amp);  // "f32" on the CPU
  if (args.image_size == 0) args.image_size = device.is_cuda() ? 224 : 32;
  if (args.steps == 0) args.steps = device.is_cuda() ? 10 : 5;
  const size_t alignment = default_allocation(device).alignment;
  if (args.misalign_bytes <= 0 || static_cast<size_t>(args.misalign_bytes) >= alignment) {
    throw std::invalid_argument("--misalign-bytes must lie in [1, " +
                                std::to_string(alignment - 1) + "] (the " + device.str() +
                                " alignment is " + std::to_string(alignment) + " bytes), got " +
                                std::to_string(args.misalign_bytes));
  }
  const int64_t padded = (args.batch_size + 7) / 8 * 8;
  std::vector<VariantResult> results;
  for (const Variant& v : make_variants(args.full)) {
    VariantResult r;
    r.variant = v;
    r.batch = v.pad_batch ? padded : args.batch_size;
    results.push_back(r);
  }
  const std::string device_text =
      device.is_cuda() ? device.str() : "cpu (" + report::cpu_description() + ")";
  std::printf(
      "b3 layout: %s, batch %lld%s, %lldx%lld synthetic images, %s, %s; %lld warm-up + "
      "%lld timed steps per measurement, %lld repeats, interleaved\n",
      args.model.c_str(), static_cast<long long>(args.batch_size),
      padded == args.batch_size
          ? " (already a multiple of 8: padding changes nothing)"
          : report::format(" (padded: %lld)", static_cast<long long>(padded)).c_str(),
      static_cast<long long>(args.image_size), static_cast<long long>(args.image_size),
      dtype_text.c_str(), device_text.c_str(), static_cast<long long>(args.warmup),
      static_cast<long long>(args.steps), static_cast<long long>(args.repeats));
  for (int64_t repeat = 0; repeat < args.repeats; ++repeat) {
    for (VariantResult& r : results) {
      measure(r, args, device, amp, static_cast<uint64_t>(repeat));
      std::printf("  repeat %lld/%lld  %-22s %9.2f ms/step\n", static_cast<long long>(repeat + 1),
                  static_cast<long long>(args.repeats), r.variant.name.c_str(),
                  1e3 * r.step_seconds.back());
      std::fflush(stdout);
    }
  }

  const report::SampleSummary baseline = report::summarize(results.front().real_images_per_second);
  std::ostringstream md, csv;
  md << "# b3 layout: one training step under different memory layouts\n\n"
     << "- device: " << device_text << "; dtype: " << dtype_text << "; model: " << args.model
     << "; batch " << args.batch_size << " (padded variant: " << padded << ")\n";
  if (device.is_cuda()) {
    md << "- precision: " << report::precision_description(amp)
       << "\n- step: train_step() (forward, cross-entropy, backward"
       << (amp ? " (loss-scaled), GradScaler step" : "")
       << ", Adam's fused CUDA update; model on the GPU, weights in the variant's layout) on "
          "synthetic ";
  } else {
    md << "- step: train_step() (forward, cross-entropy, backward, Adam) on synthetic ";
  }
  md << args.image_size << "x" << args.image_size << " images; " << args.warmup << " warm-up + "
     << args.steps << " timed steps per measurement; " << args.repeats
     << " measurements per variant, interleaved; mean ± sample std\n"
     << "- misaligned: input batch and parameters start " << args.misalign_bytes << " bytes past a "
     << alignment << "-byte boundary"
     << (device.is_cuda() && amp ? " (the f32 master weights; autocast's f16 copies are aligned)"
                                 : "")
     << "\n"
     << "- images/s counts real images only (" << args.batch_size << " per step)\n\n"
     << "| variant | layout | channel divisor | images per step | storage | parameters | step "
        "(ms) | real images/s | relative to baseline | beyond spread vs baseline |\n"
     << "|---|---|---:|---:|---|---:|---:|---:|---:|---|\n";
  csv << "variant,layout,channel_divisor,images_per_step,misaligned,parameters,step_ms_mean,"
         "step_ms_std,real_images_per_second_mean,real_images_per_second_std,repeats\n";
  plot::Series bars{"real images/s (mean +- 1 std)", {}, {}, {}, false, "#4477aa", 7};
  std::vector<std::string> labels;
  std::printf("\n%-24s %16s %18s %9s  %s\n", "variant", "step (ms)", "real images/s", "relative",
              "beyond spread vs baseline");
  for (const VariantResult& r : results) {
    std::vector<double> ms;
    for (double s : r.step_seconds) ms.push_back(1e3 * s);
    const report::SampleSummary step = report::summarize(ms);
    const report::SampleSummary rate = report::summarize(r.real_images_per_second);
    const report::Comparison c = report::compare(rate, baseline);
    const std::string verdict = &r == &results.front() ? "(baseline)" : c.verdict;
    const char* layout = r.variant.format == MemoryFormat::channels_last ? "nhwc" : "nchw";
    md << "| " << r.variant.name << " | " << layout << " | " << r.variant.channel_divisor << " | "
       << r.batch << " | " << (r.variant.misaligned ? "misaligned" : "aligned") << " | "
       << r.parameters << " | " << report::format_mean_std(step, 2) << " | "
       << report::format_mean_std(rate, 1) << " | "
       << report::format("%.3f", rate.mean / baseline.mean) << " | " << verdict << " |\n";
    csv << '"' << r.variant.name << "\"," << layout << "," << r.variant.channel_divisor << ","
        << r.batch << "," << (r.variant.misaligned ? 1 : 0) << "," << r.parameters << ","
        << step.mean << "," << step.std << "," << rate.mean << "," << rate.std << "," << rate.count
        << "\n";
    std::printf("%-24s %16s %18s %9.3f  %s\n", r.variant.name.c_str(),
                report::format_mean_std(step, 2).c_str(), report::format_mean_std(rate, 1).c_str(),
                rate.mean / baseline.mean, verdict.c_str());
    bars.y.push_back(rate.mean);
    bars.error.push_back(rate.std);
    labels.push_back(r.variant.name);
  }
  md << "\n" << report::kSignificanceRule << "\n\n";

  const std::filesystem::path dir = args.out;
  std::filesystem::create_directories(dir);
  plot::Figure figure;
  figure.bars = true;
  figure.bar_labels = labels;
  figure.series.push_back(bars);
  figure.title = report::format("b3 layout: %s training step, batch %lld | %s, %s",
                                args.model.c_str(), static_cast<long long>(args.batch_size),
                                device_text.c_str(), dtype_text.c_str());
  figure.subtitle = report::format(
      "real images/s, mean +- 1 sample std over %lld measurements of %lld steps; baseline nhwc, "
      "divisor 8, unpadded, aligned; %lldx%lld synthetic",
      static_cast<long long>(args.repeats), static_cast<long long>(args.steps),
      static_cast<long long>(args.image_size), static_cast<long long>(args.image_size));
  figure.y_label = "real images/s";
  figure.y_from_zero = true;
  const plot::PlotFiles files = plot::write_plot(dir / "layout", figure);
  md << (files.rendered ? "![layout](layout.png)\n" : "Plot not rendered: " + files.note + "\n");
  report::write_text_atomically(dir / "layout.md", md.str());
  report::write_text_atomically(dir / "layout.csv", csv.str());
  if (!files.rendered) std::printf("plot: %s\n", files.note.c_str());
  std::printf("wrote %s/layout.md, layout.csv%s\n", dir.string().c_str(),
              files.rendered ? ", layout.png" : "");
}

}  // namespace

void register_layout_command(CLI::App& app) {
  auto args = std::make_shared<LayoutArgs>();
  CLI::App* cmd = app.add_subcommand(
      "layout", "training-step time under NCHW/NHWC, channel rounding, batch padding, alignment");
  cmd->add_option("--device", args->device, "cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  cmd->add_option("--model", args->model, "mobilenet_v3_large or mobilenet_v3_small")
      ->check(CLI::IsMember({"mobilenet_v3_large", "mobilenet_v3_small"}))
      ->capture_default_str();
  cmd->add_option("--batch-size", args->batch_size, "the batch size studied")
      ->check(CLI::Validator([](std::string& s) { return report::integer_at_least_problem(s, 1); },
                             "INT>=1", "at least 1"))
      ->capture_default_str();
  cmd->add_option("--image-size", args->image_size, "image height and width (224; CPU: 32)")
      ->check(CLI::Range(int64_t{8}, int64_t{4096}));
  cmd->add_option("--steps", args->steps, "timed steps per measurement (10; CPU: 5)")
      ->check(CLI::Validator([](std::string& s) { return report::integer_at_least_problem(s, 1); },
                             "INT>=1", "at least 1"));
  cmd->add_option("--warmup", args->warmup, "untimed steps before each measurement")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--repeats", args->repeats, "measurements per variant")
      ->check(CLI::Validator([](std::string& s) { return report::integer_at_least_problem(s, 1); },
                             "INT>=1", "at least 1"))
      ->capture_default_str();
  cmd->add_option("--misalign-bytes", args->misalign_bytes,
                  "offset past the alignment boundary for the misaligned variant")
      ->capture_default_str();
  const AmpOption amp(cmd);
  const RetiredPrecisionOption precision(cmd, "b3 layout");
  cmd->add_flag("--full", args->full, "all 24 combinations instead of one factor at a time");
  cmd->add_option("--out", args->out, "directory for layout.md, layout.csv, layout.png")
      ->capture_default_str();
  cmd->callback([args, amp, precision] {
    precision.reject_if_given();
    args->amp = amp.choice();
    run_layout(*args);
  });
}

}  // namespace b3::cli
