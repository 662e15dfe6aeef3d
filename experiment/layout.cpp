// The layout experiment's variants and measurements (see layout.h).
#include "experiment/layout.h"

#include <memory>
#include <stdexcept>

#include "experiment/report.h"
#include "experiment/step_timing.h"
#include "models/mobilenet_v3.h"
#include "optim/grad_scaler.h"
#include "train/setup.h"

namespace b3::experiment {

namespace {

// One measurement: a fresh model and optimizer, the warm-up steps, then the
// timed steps (appended to `result`).
void measure(LayoutMeasurement& result, const LayoutPlan& plan, uint64_t seed) {
  const LayoutConfig& config = plan.config;
  const LayoutVariant& v = result.variant;
  const Device& device = plan.device;
  MobileNetV3Options options;
  options.arch = parse_mobilenet_v3_arch(config.model);
  options.num_classes = 10;
  options.channel_divisor = v.channel_divisor;
  options.seed = seed;
  MobileNetV3 model(options);
  if (device.is_cuda()) prepare_model(model, device, v.format);
  const size_t misalign = static_cast<size_t>(config.misalign_bytes);
  if (v.misaligned) {
    for (auto& [name, p] : model.named_parameters()) p.set_data(misaligned_copy(p, misalign));
  }
  result.parameters = model.parameter_count();
  // Adam with PyTorch's default lr (1e-3).
  const std::unique_ptr<Optimizer> optimizer = make_optimizer({"adam", 1e-3}, model);
  std::optional<GradScaler> scaler;
  if (plan.amp) scaler.emplace(device);
  LabeledBatch batch = uniform_batch(result.batch, config.image_size, 10, v.format, device, seed);
  if (v.misaligned) batch.images = misaligned_copy(batch.images, misalign);
  const TimedSteps timed = time_train_steps(model, *optimizer, batch, scaler ? &*scaler : nullptr,
                                            config.warmup, config.steps);
  result.step_seconds.push_back(timed.seconds_per_step);
  result.real_images_per_second.push_back(static_cast<double>(config.batch_size) /
                                          timed.seconds_per_step);
}

}  // namespace

std::string describe_variant(const LayoutVariant& v) {
  return std::string(v.format == MemoryFormat::channels_last ? "nhwc" : "nchw") + ", div " +
         std::to_string(v.channel_divisor) + ", " + (v.pad_batch ? "padded" : "unpadded") + ", " +
         (v.misaligned ? "misaligned" : "aligned");
}

std::vector<LayoutVariant> layout_variants(bool full) {
  std::vector<LayoutVariant> variants;
  if (full) {
    for (MemoryFormat f : {MemoryFormat::channels_last, MemoryFormat::contiguous})
      for (int64_t d : {8, 1, 16})
        for (bool pad : {false, true})
          for (bool mis : {false, true}) variants.push_back({"", f, d, pad, mis});
    for (LayoutVariant& v : variants) v.name = describe_variant(v);
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

LayoutPlan plan_layout(const LayoutConfig& config) {
  LayoutPlan plan;
  plan.config = config;
  plan.device = config.device == "cuda" ? Device::cuda(0) : Device::cpu();
  require_device_available(plan.device, "b3 layout --device " + config.device);
  const bool cuda = plan.device.is_cuda();
  plan.amp = resolve_amp(config.amp, cuda, "b3 layout");
  if (plan.config.image_size == 0) plan.config.image_size = cuda ? 224 : 32;
  if (plan.config.steps == 0) plan.config.steps = cuda ? 10 : 5;
  plan.alignment = default_allocation(plan.device).alignment;
  if (config.misalign_bytes <= 0 || static_cast<size_t>(config.misalign_bytes) >= plan.alignment) {
    throw std::invalid_argument("--misalign-bytes must lie in [1, " +
                                std::to_string(plan.alignment - 1) + "] (the " + plan.device.str() +
                                " alignment is " + std::to_string(plan.alignment) +
                                " bytes), got " + std::to_string(config.misalign_bytes));
  }
  plan.padded_batch = (config.batch_size + 7) / 8 * 8;
  plan.device_text = cuda ? plan.device.str() : "cpu (" + report::cpu_description() + ")";
  return plan;
}

std::vector<LayoutMeasurement> run_layout(
    const LayoutPlan& plan,
    const std::function<void(const LayoutMeasurement&, int64_t repeat)>& on_measured) {
  std::vector<LayoutMeasurement> results;
  for (const LayoutVariant& v : layout_variants(plan.config.full)) {
    LayoutMeasurement r;
    r.variant = v;
    r.batch = v.pad_batch ? plan.padded_batch : plan.config.batch_size;
    results.push_back(r);
  }
  for (int64_t repeat = 0; repeat < plan.config.repeats; ++repeat) {
    for (LayoutMeasurement& r : results) {
      measure(r, plan, static_cast<uint64_t>(repeat));
      if (on_measured) on_measured(r, repeat);
    }
  }
  return results;
}

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

}  // namespace b3::experiment
