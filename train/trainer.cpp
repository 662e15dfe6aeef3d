// The training loop, the single step it repeats, and evaluation, on the CPU
// or a CUDA device (with optional mixed precision; see trainer.h).
#include "train/trainer.h"

#include <chrono>
#include <optional>
#include <stdexcept>

#include "autograd/grad_mode.h"
#include "layers/batchnorm2d.h"
#include "layers/loss.h"
#include "tensor/autocast.h"

namespace b3 {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

template <typename Fn>
void visit_modules(Module& module, Fn&& fn) {
  fn(module);
  for (auto& [name, child] : module.named_children()) visit_modules(*child, fn);
}

// Restores the training flags of a module tree when it goes out of scope.
class ModeRestorer {
 public:
  explicit ModeRestorer(Module& model) : model_(model) {
    visit_modules(model_, [&](Module& m) { flags_.push_back(m.is_training()); });
  }
  ~ModeRestorer() {
    size_t i = 0;
    visit_modules(model_, [&](Module& m) { set_own_flag(m, flags_[i++]); });
  }
  ModeRestorer(const ModeRestorer&) = delete;
  ModeRestorer& operator=(const ModeRestorer&) = delete;

  // Module::train() recurses; to set one module's flag alone, set it and then
  // put its children back.
  static void set_own_flag(Module& m, bool on) {
    std::vector<bool> child_flags;
    for (auto& [name, child] : m.named_children()) child_flags.push_back(child->is_training());
    m.train(on);
    size_t k = 0;
    for (auto& [name, child] : m.named_children()) child->train(child_flags[k++]);
  }

 private:
  Module& model_;
  std::vector<bool> flags_;
};

// AutocastGuard(f16) while alive when `on`, nothing otherwise.
class OptionalAutocast {
 public:
  explicit OptionalAutocast(bool on) {
    if (on) guard_.emplace(DType::f16);
  }

 private:
  std::optional<AutocastGuard> guard_;
};

}  // namespace

MemoryFormat model_memory_format(const Module& model) {
  for (const Tensor& p : model.parameters())
    if (p.dim() == 4 && p.suggest_memory_format() == MemoryFormat::channels_last)
      return MemoryFormat::channels_last;
  return MemoryFormat::contiguous;
}

Device model_device(const Module& model) {
  const std::vector<Tensor> parameters = model.parameters();
  return parameters.empty() ? Device::cpu() : parameters.front().device();
}

LabeledBatch batch_for_device(const LabeledBatch& batch, const Device& device,
                              MemoryFormat format) {
  if (device.is_cpu()) return batch;
  LabeledBatch out;
  out.images = batch.images.device() == device ? batch.images : batch.images.to(device);
  if (out.images.dim() == 4) out.images = out.images.contiguous(format);
  out.labels = batch.labels.device() == device ? batch.labels : batch.labels.to(device);
  return out;
}

int64_t count_correct(const Tensor& logits, const Tensor& labels) {
  if (logits.dim() != 2 || labels.dim() != 1 || labels.size(0) != logits.size(0)) {
    throw std::invalid_argument("count_correct: logits " + shape_str(logits.shape()) +
                                " and labels " + shape_str(labels.shape()) + " do not match");
  }
  const std::vector<double> z = logits.to_doubles();
  const std::vector<double> y = labels.to_doubles();
  const int64_t n = logits.size(0), classes = logits.size(1);
  int64_t correct = 0;
  for (int64_t i = 0; i < n; ++i) {
    int64_t best = 0;
    for (int64_t c = 1; c < classes; ++c)
      if (z[static_cast<size_t>(i * classes + c)] > z[static_cast<size_t>(i * classes + best)])
        best = c;
    if (best == static_cast<int64_t>(y[static_cast<size_t>(i)])) ++correct;
  }
  return correct;
}

StepResult train_step(Module& model, Optimizer& optimizer, const LabeledBatch& batch,
                      TrainAccuracy accuracy) {
  StepOptions options;
  options.accuracy = accuracy;
  return train_step(model, optimizer, batch, options);
}

StepResult train_step(Module& model, Optimizer& optimizer, const LabeledBatch& input,
                      const StepOptions& options) {
  const Device device = model_device(model);
  const LabeledBatch batch =
      device.is_cpu() ? input : batch_for_device(input, device, model_memory_format(model));
  const QueuedStep queued =
      queue_train_step(model, optimizer, batch, options.scaler, options.data_parallel);
  return read_step_results(model, queued, options);
}

QueuedStep queue_train_step(Module& model, Optimizer& optimizer, const LabeledBatch& batch,
                            GradScaler* scaler, dist::DataParallel* data_parallel) {
  const Device device = model_device(model);
  if (scaler != nullptr && !device.is_cuda()) {
    throw std::invalid_argument(
        "train_step: mixed precision (a GradScaler) needs the model on a "
        "CUDA device; it is on " +
        device.str());
  }
  model.train();
  optimizer.zero_grad();
  QueuedStep queued;
  queued.batch = batch;
  if (data_parallel != nullptr) data_parallel->before_forward();
  {
    OptionalAutocast autocast(scaler != nullptr);  // forward and loss, as torch.autocast
    queued.logits = model.forward(batch.images);
    queued.loss = cross_entropy(queued.logits, batch.labels);
  }
  // Gradients (of loss * scale with a scaler), then, with data parallelism,
  // their mean over the ranks (an inf or nan on one rank reaches every rank,
  // so all of them skip that step alike), then the optimizer.
  if (scaler != nullptr) {
    queued.loss.backward(scaler->scale_seed().to(queued.loss.dtype()));
  } else {
    queued.loss.backward();
  }
  if (data_parallel != nullptr) data_parallel->after_backward();
  if (scaler != nullptr) {
    scaler->step(optimizer);  // unscales; skips on inf/nan
    scaler->update();
  } else {
    optimizer.step();
  }
  queued.loss = queued.loss.detach();
  queued.logits = queued.logits.detach();
  return queued;
}

StepResult read_step_results(Module& model, const QueuedStep& queued, const StepOptions& options) {
  GradScaler* scaler = options.scaler;
  StepResult result;
  result.images = queued.batch.images.size(0);
  if (!options.read_results) return result;
  result.loss = queued.loss.item();
  if (scaler != nullptr) {
    result.loss_scale = scaler->scale();
    result.skipped = scaler->last_step_skipped();
  }
  if (options.accuracy == TrainAccuracy::from_training_logits) {
    result.correct = count_correct(queued.logits, queued.batch.labels);
  } else {
    NoGradGuard no_grad;
    OptionalAutocast autocast(scaler != nullptr);
    model.eval();
    result.correct = count_correct(model.forward(queued.batch.images), queued.batch.labels);
    model.train();
  }
  return result;
}

EvalResult combine_over_ranks(const EvalResult& local, dist::ProcessGroup& group) {
  const double images = static_cast<double>(local.images);
  double sums[4] = {local.loss * images, local.accuracy * images, images, local.seconds};
  group.all_reduce_sum(sums, 4);
  EvalResult all;
  all.images = static_cast<int64_t>(sums[2]);
  if (all.images > 0) {
    all.loss = sums[0] / sums[2];
    all.accuracy = sums[1] / sums[2];
  }
  all.seconds = sums[3] / static_cast<double>(group.size());
  return all;
}

std::vector<EpochReport> train(Module& model, Optimizer& optimizer, BatchSource& train_data,
                               BatchSource* validation, const TrainOptions& options) {
  if (options.epochs <= 0) {
    throw std::invalid_argument("train: epochs must be positive, got " +
                                std::to_string(options.epochs));
  }
  if (options.scaler != nullptr && !options.amp)
    throw std::invalid_argument("train: a GradScaler was given but amp is off");
  std::optional<GradScaler> owned_scaler;
  GradScaler* scaler = options.scaler;
  if (options.amp) {
    const Device device = model_device(model);
    if (!device.is_cuda()) {
      throw std::invalid_argument(
          "train: mixed precision (amp) needs the model on a CUDA device; "
          "it is on " +
          device.str());
    }
    if (scaler == nullptr) scaler = &owned_scaler.emplace(device, options.loss_scale);
  }
  StepOptions step_options;
  step_options.accuracy = options.train_accuracy;
  step_options.scaler = scaler;
  step_options.data_parallel = options.data_parallel;
  std::vector<EpochReport> reports;
  TrainProgress progress;
  if (options.resume != nullptr) {
    progress = *options.resume;
    progress.at_epoch_end = false;
    reports = progress.finished;
  }
  const int64_t first_epoch = progress.epoch;
  for (int64_t epoch = first_epoch; epoch < options.epochs; ++epoch) {
    if (options.max_steps != 0 && progress.global_step >= options.max_steps) break;
    const bool resuming = epoch == first_epoch && progress.step_in_epoch > 0;
    if (!resuming) {
      progress.epoch = epoch;
      progress.step_in_epoch = 0;
      progress.loss_sum = 0.0;
      progress.correct = progress.images = 0;
      progress.seconds_in_epoch = 0.0;
    }
    EpochReport report;
    report.epoch = epoch;
    report.steps = progress.step_in_epoch;
    train_data.start_epoch(epoch);
    for (int64_t skip = 0; skip < progress.step_in_epoch; ++skip) {
      if (!train_data.next()) {
        throw std::runtime_error("train: cannot resume at step " +
                                 std::to_string(progress.step_in_epoch) + " of epoch " +
                                 std::to_string(epoch + 1) + ": the data has only " +
                                 std::to_string(skip) + " batches per epoch");
      }
    }
    const double seconds_before = progress.seconds_in_epoch;
    const auto start = Clock::now();
    while (options.max_steps == 0 || progress.global_step < options.max_steps) {
      std::optional<LabeledBatch> batch = train_data.next();
      if (!batch) break;
      if (options.schedule) optimizer.set_lr(options.schedule->lr_at(progress.global_step));
      const StepResult step = train_step(model, optimizer, *batch, step_options);
      ++progress.global_step;
      ++progress.step_in_epoch;
      ++report.steps;
      progress.loss_sum += step.loss * static_cast<double>(step.images);
      progress.correct += step.correct;
      progress.images += step.images;
      progress.seconds_in_epoch = seconds_before + seconds_since(start);
      if (options.on_step) {
        options.on_step({epoch, report.steps, train_data.batches_per_epoch(), progress.global_step,
                         step, progress.seconds_in_epoch});
      }
      if (options.after_step && options.after_step(progress)) return reports;
    }
    report.train_seconds = seconds_before + seconds_since(start);
    double loss_sum = progress.loss_sum;
    int64_t correct = progress.correct, images = progress.images;
    if (options.data_parallel != nullptr) {  // the epoch's figures over every rank's shard
      double sums[3] = {loss_sum, static_cast<double>(correct), static_cast<double>(images)};
      options.data_parallel->group().all_reduce_sum(sums, 3);
      loss_sum = sums[0];
      correct = static_cast<int64_t>(sums[1]);
      images = static_cast<int64_t>(sums[2]);
    }
    if (images > 0) {
      report.train_loss = loss_sum / static_cast<double>(images);
      report.train_accuracy = static_cast<double>(correct) / static_cast<double>(images);
      report.images_per_second = static_cast<double>(images) / report.train_seconds;
    }
    if (validation != nullptr) {
      report.validation =
          evaluate(model, *validation, BatchNormMode::running_statistics, options.amp);
      if (options.data_parallel != nullptr) {
        report.validation = combine_over_ranks(*report.validation, options.data_parallel->group());
      }
    }
    if (options.on_epoch) options.on_epoch(report);
    reports.push_back(report);
    progress.finished = reports;
    progress.epoch = epoch + 1;
    progress.step_in_epoch = 0;
    progress.loss_sum = 0.0;
    progress.correct = progress.images = 0;
    progress.seconds_in_epoch = 0.0;
    progress.at_epoch_end = true;
    if (options.after_step && options.after_step(progress)) return reports;
    progress.at_epoch_end = false;
  }
  return reports;
}

EvalResult evaluate(Module& model, BatchSource& data, BatchNormMode mode, bool autocast) {
  ModeRestorer restore_modes(model);
  NoGradGuard no_grad;
  const Device device = model_device(model);
  const MemoryFormat format = model_memory_format(model);
  // Batch statistics: BatchNorm layers in training mode (they would update
  // their running buffers, so those are saved and put back), all else eval.
  std::vector<std::pair<Tensor, Tensor>> saved_buffers;
  model.eval();
  if (mode == BatchNormMode::batch_statistics) {
    for (auto& [name, buffer] : model.named_buffers())
      saved_buffers.emplace_back(buffer, buffer.clone());
    visit_modules(model, [](Module& m) {
      if (dynamic_cast<BatchNorm2d*>(&m) != nullptr) ModeRestorer::set_own_flag(m, true);
    });
  }
  const auto start = Clock::now();
  EvalResult result;
  double loss_sum = 0.0;
  int64_t correct = 0;
  data.start_epoch(0);
  while (std::optional<LabeledBatch> next = data.next()) {
    const LabeledBatch batch = batch_for_device(*next, device, format);
    OptionalAutocast autocast_scope(autocast);
    const Tensor logits = model.forward(batch.images);
    const int64_t n = batch.images.size(0);
    loss_sum += cross_entropy(logits, batch.labels).item() * static_cast<double>(n);
    correct += count_correct(logits, batch.labels);
    result.images += n;
  }
  for (auto& [buffer, copy] : saved_buffers) buffer.copy_(copy);
  result.seconds = seconds_since(start);
  if (result.images > 0) {
    result.loss = loss_sum / static_cast<double>(result.images);
    result.accuracy = static_cast<double>(correct) / static_cast<double>(result.images);
  }
  return result;
}

void recalibrate_batchnorm(Module& model, BatchSource& data, int64_t batches) {
  if (batches <= 0) {
    throw std::invalid_argument("recalibrate_batchnorm: batches must be positive, got " +
                                std::to_string(batches));
  }
  ModeRestorer restore_modes(model);
  NoGradGuard no_grad;
  std::vector<std::pair<BatchNorm2d*, double>> layers;
  model.eval();
  visit_modules(model, [&](Module& m) {
    if (auto* bn = dynamic_cast<BatchNorm2d*>(&m)) {
      layers.emplace_back(bn, bn->options().momentum);
      ModeRestorer::set_own_flag(m, true);
      if (bn->running_mean.defined()) bn->running_mean.zero_();
      if (bn->running_var.defined()) bn->running_var.fill_(1.0);
    }
  });
  const Device device = model_device(model);
  const MemoryFormat format = model_memory_format(model);
  data.start_epoch(0);
  for (int64_t k = 1; k <= batches; ++k) {
    std::optional<LabeledBatch> batch = data.next();
    if (!batch) break;
    for (auto& [bn, momentum] : layers) bn->set_momentum(1.0 / static_cast<double>(k));
    const Tensor images = batch_for_device(*batch, device, format).images;
    // f16 images (the GPU pipeline under mixed precision) run as they trained.
    OptionalAutocast autocast(images.dtype() == DType::f16);
    model.forward(images);
  }
  for (auto& [bn, momentum] : layers) bn->set_momentum(momentum);
}

}  // namespace b3
