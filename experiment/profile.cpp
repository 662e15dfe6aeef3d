// The per-layer profile: the blocks, the cut step, the uncut train_step and
// the run over batch sizes (see profile.h).
#include "experiment/profile.h"

#include <algorithm>
#include <chrono>
#include <memory>

#include "experiment/gpu_timing.h"
#include "experiment/report.h"
#include "experiment/step_timing.h"
#include "layers/conv2d.h"
#include "layers/conv2d_cpu.h"
#include "layers/conv2d_cuda.h"
#include "layers/loss.h"
#include "layers/squeeze_excite.h"
#include "optim/grad_scaler.h"
#include "tensor/autocast.h"
#include "train/setup.h"
#include "train/trainer.h"

namespace b3::experiment {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void collect_conv_kernels(const Module& m, std::vector<std::string>& out) {
  if (const auto* conv = dynamic_cast<const Conv2d*>(&m))
    out.push_back(cpu_conv_kernel(conv->options()));
  for (const auto& [name, child] : m.named_children()) collect_conv_kernels(*child, out);
}

std::string conv_kernels_of(const Module& m) {
  std::vector<std::string> kernels;
  collect_conv_kernels(m, kernels);
  if (kernels.empty()) return "-";
  std::string text;
  for (const std::string& k : kernels) text += (text.empty() ? "" : " + ") + k;
  return text;
}

void collect_convs(const Module& m, bool in_squeeze_excite, std::vector<ConvSite>& out) {
  if (const auto* conv = dynamic_cast<const Conv2d*>(&m))
    out.push_back({conv->options(), in_squeeze_excite});
  const bool squeeze_excite =
      in_squeeze_excite || dynamic_cast<const SqueezeExcitation*>(&m) != nullptr;
  for (const auto& [name, child] : m.named_children()) collect_convs(*child, squeeze_excite, out);
}

// f16 autocast while alive, when the step runs in mixed precision.
class MaybeAutocast {
 public:
  explicit MaybeAutocast(bool on) {
    if (on) guard_.emplace(DType::f16);
  }

 private:
  std::optional<AutocastGuard> guard_;
};

// The seed of the loss's backward: none (1) in f32; in mixed precision the
// scaler's current scale, as train_step() seeds it, so the f16 gradients
// have the magnitudes a loss-scaled training step gives them.
Tensor loss_seed(const Tensor& loss, const GradScaler* scaler) {
  if (scaler == nullptr) return Tensor();
  return scaler->scale_seed().to(loss.dtype());
}

// The forward of every block and of the loss, each timed alone; `inputs`
// and `outputs` keep the cut points for the backward.
void profile_forward(std::vector<Block>& blocks, const LabeledBatch& batch,
                     std::vector<BlockTimes>& times, std::vector<Tensor>& inputs,
                     std::vector<Tensor>& outputs, const Device& device, bool amp) {
  const size_t n = blocks.size();
  Tensor x = batch.images;
  for (size_t i = 0; i <= n; ++i) {
    inputs[i] = i == 0 ? x : x.detach().set_requires_grad(true);
    synchronize(device);
    const auto start = Clock::now();
    {
      MaybeAutocast autocast(amp);
      outputs[i] = i < n ? blocks[i].run(inputs[i]) : cross_entropy(inputs[i], batch.labels);
    }
    synchronize(device);
    times[i].forward.push_back(since(start));
    times[i].output_shape = outputs[i].shape();
    x = outputs[i];
  }
}

// One profiled training step (no optimizer): appends every piece's times.
void profile_step(std::vector<Block>& blocks, const LabeledBatch& batch,
                  std::vector<BlockTimes>& times, MobileNetV3& model, const Device& device,
                  const GradScaler* scaler) {
  const size_t n = blocks.size();
  std::vector<Tensor> inputs(n + 1), outputs(n + 1);
  profile_forward(blocks, batch, times, inputs, outputs, device, scaler != nullptr);
  const Tensor seed = loss_seed(outputs[n], scaler);
  synchronize(device);
  auto start = Clock::now();
  outputs[n].backward(seed);
  synchronize(device);
  times[n].backward.push_back(since(start));
  for (size_t i = n; i-- > 0;) {
    const Tensor upstream = inputs[i + 1].grad();
    synchronize(device);
    start = Clock::now();
    outputs[i].backward(upstream);
    synchronize(device);
    times[i].backward.push_back(since(start));
  }
  model.zero_grad();
}

// The same step uncut, as training runs it: one train_step() (forward, loss,
// backward and the Adam update) between two synchronizations.
double time_uncut_step(MobileNetV3& model, Optimizer& optimizer, const LabeledBatch& batch,
                       const Device& device, GradScaler* scaler) {
  StepOptions options;
  options.scaler = scaler;
  options.read_results = false;  // as a timed step: nothing read back
  synchronize(device);
  const auto start = Clock::now();
  train_step(model, optimizer, batch, options);
  synchronize(device);
  return since(start);
}

MobileNetV3Options model_options(const ProfileConfig& config) {
  MobileNetV3Options options;
  options.arch = parse_mobilenet_v3_arch(config.model);
  options.num_classes = 10;
  return options;
}

}  // namespace

std::string cpu_conv_kernel(const Conv2dOptions& o) {
  // The choice depends on the channels, kernel, stride, padding, groups and
  // dtype, not on the batch or the image size: any valid input size will do.
  Conv2dGeometry g = conv2d_geometry(1, o.in_channels, o.kernel_size, o.kernel_size, o.out_channels,
                                     o.kernel_size, o.stride, o.padding, o.groups);
  g.format = MemoryFormat::channels_last;
  g.dtype = DType::f32;  // the CPU profile trains in f32
  return cpu::conv2d_cpu_algorithm_name(cpu::conv2d_cpu_algorithm(g));
}

std::vector<Block> blocks_of(MobileNetV3& model) {
  std::vector<Block> blocks;
  for (const auto& [name, layer] : model.features->named_children()) {
    Module* m = layer.get();
    std::vector<ConvSite> convs;
    collect_convs(*m, false, convs);
    blocks.push_back({"features." + name, m->describe(),
                      [m](const Tensor& x) { return m->forward(x); }, conv_kernels_of(*m), convs});
  }
  Module* pool = model.avgpool.get();
  blocks.push_back({"avgpool",
                    pool->describe() + " + flatten",
                    [pool](const Tensor& x) { return pool->forward(x).flatten(1); },
                    "-",
                    {}});
  for (const auto& [name, layer] : model.classifier->named_children()) {
    Module* m = layer.get();
    blocks.push_back({"classifier." + name,
                      m->describe(),
                      [m](const Tensor& x) { return m->forward(x); },
                      "-",
                      {}});
  }
  return blocks;
}

ProfilePlan plan_profile(const ProfileConfig& config) {
  ProfilePlan plan;
  plan.config = config;
  plan.batch_sizes = report::parse_size_list(config.batch_sizes, "--batch-sizes");
  plan.device = config.device == "cuda" ? Device::cuda(0) : Device::cpu();
  require_device_available(plan.device, "b3 profile --device " + config.device);
  const bool cuda = plan.device.is_cuda();
  plan.amp = resolve_amp(config.amp, cuda, "b3 profile");
  if (plan.config.image_size == 0) plan.config.image_size = cuda ? 224 : 32;
  plan.device_text = cuda ? plan.device.str() : "cpu (" + report::cpu_description() + ")";
  return plan;
}

BatchProfile profile_batch(int64_t batch, const ProfilePlan& plan) {
  const ProfileConfig& config = plan.config;
  const Device& device = plan.device;
  MobileNetV3 model(model_options(config));
  const MemoryFormat format = parse_memory_format(config.format);
  if (device.is_cuda()) prepare_model(model, device, format);
  model.train();
  // Adam with PyTorch's default lr (1e-3), for the uncut train_step.
  const std::unique_ptr<Optimizer> optimizer = make_optimizer({"adam", 1e-3}, model);
  std::optional<GradScaler> scaler;
  if (plan.amp) scaler.emplace(device);
  GradScaler* scaler_pointer = scaler ? &*scaler : nullptr;
  std::vector<Block> blocks = blocks_of(model);
  const LabeledBatch data = uniform_batch(batch, config.image_size, 10, format, device, 0);

  BatchProfile profile;
  profile.batch = batch;
  std::vector<BlockTimes> warm(blocks.size() + 1);
  for (int64_t i = 0; i < config.warmup; ++i)
    profile_step(blocks, data, warm, model, device, scaler_pointer);
  profile.blocks.resize(blocks.size() + 1);
  for (int64_t r = 0; r < config.repeats; ++r) {
    profile_step(blocks, data, profile.blocks, model, device, scaler_pointer);
    profile.whole_step.push_back(time_uncut_step(model, *optimizer, data, device, scaler_pointer));
  }
  return profile;
}

ProfileResult run_profile(const ProfilePlan& plan, const std::function<void(int64_t)>& on_batch) {
  ProfileResult result;
  for (int64_t b : plan.batch_sizes) {
    if (on_batch) on_batch(b);
    result.profiles.push_back(profile_batch(b, plan));
  }
  // The cuDNN algorithms every convolution shape of the run chose.
  if (plan.device.is_cuda()) {
    result.algorithm_report = cuda::conv_algorithm_report(plan.device.index);
    result.conv_report = parse_conv_report(result.algorithm_report);
  }
  // Names and kernels from a throwaway model (the same for every batch size);
  // the blocks cannot run once it is gone.
  MobileNetV3 model(model_options(plan.config));
  result.blocks = blocks_of(model);
  for (Block& block : result.blocks) block.run = nullptr;
  result.blocks.push_back({"loss", "cross_entropy", nullptr, "-", {}});
  return result;
}

}  // namespace b3::experiment
