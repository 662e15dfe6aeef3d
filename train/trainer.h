// The training loop and evaluation, as a library:
//
//   for each epoch, for each batch:
//     logits = model(images)                 (training mode)
//     loss   = cross_entropy(logits, labels)
//     zero_grad; loss.backward(); optimizer.step()
//
// train_step() is one such step, so every command that times a step
// (bench-step, sweep, layout, maxbatch, profile) times exactly what train()
// runs. Train accuracy comes either free from the training logits, or, as the
// reference benchmark computes it, from an extra eval-mode forward per step.
// evaluate() runs with no grad, in eval mode (running statistics), or with
// BatchNorm's batch statistics (buffers restored afterwards, dropout off).
//
// Devices: the model's device is its parameters' (Module::to(device) moves
// it). On CUDA each batch is uploaded with .to(device) (a no-op when the
// loader already put it there), images made channels_last when the model's
// 4-D weights are, and the step may use mixed precision like
// torch.cuda.amp: forward and loss under AutocastGuard (f16 convolutions and
// GEMMs, f32 loss), backward seeded with the GradScaler's scale, then
// scaler.step(optimizer) and scaler.update(). On the CPU nothing changes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "data/batch_source.h"
#include "distributed/data_parallel.h"
#include "layers/module.h"
#include "optim/grad_scaler.h"
#include "optim/lr_schedule.h"
#include "optim/optimizer.h"

namespace b3 {

enum class TrainAccuracy { from_training_logits, from_eval_forward };
enum class BatchNormMode { running_statistics, batch_statistics };

struct StepResult {
  double loss = 0.0;
  int64_t correct = 0;
  int64_t images = 0;
  // With a GradScaler (and read_results): the scale after the step's update,
  // and whether the step was skipped for inf/nan gradients.
  double loss_scale = 0.0;
  bool skipped = false;
};

struct StepOptions {
  TrainAccuracy accuracy = TrainAccuracy::from_training_logits;
  // Mixed precision (CUDA only): forward and loss under AutocastGuard, the
  // loss scaled by this scaler. nullptr: f32 throughout.
  GradScaler* scaler = nullptr;
  // Data-parallel training (distributed/data_parallel.h): rank 0's buffers
  // broadcast before the forward, gradients averaged over the ranks between
  // backward and the optimizer step. nullptr: this process alone.
  dist::DataParallel* data_parallel = nullptr;
  // false: no host reads after the step (loss, correct, loss_scale stay 0),
  // so a device step is only queued; experiment/step_timing.h times a run
  // of such steps between two synchronizations.
  bool read_results = true;
};

struct EvalResult {
  double loss = 0.0;      // mean over images
  double accuracy = 0.0;  // fraction in [0, 1]
  int64_t images = 0;
  double seconds = 0.0;
};

struct StepReport {  // passed to the progress callback after every step
  int64_t epoch = 0, step_in_epoch = 0, steps_per_epoch = 0, global_step = 0;
  StepResult result;
  double seconds_in_epoch = 0.0;
};

struct EpochReport {
  int64_t epoch = 0;
  int64_t steps = 0;
  double train_loss = 0.0;
  double train_accuracy = 0.0;
  double train_seconds = 0.0;  // training only; validation is timed apart
  double images_per_second = 0.0;
  std::optional<EvalResult> validation;
};

// Where a run stands, and the figures it has gathered so far: what a
// checkpoint holds to resume the loop exactly (train/train_run.h writes it).
// After step s of epoch e: epoch = e, step_in_epoch = s (s steps of e done),
// the sums over those steps; at an epoch's end (after its validation):
// epoch = e + 1, step_in_epoch = 0, `finished` holding e's report.
struct TrainProgress {
  int64_t epoch = 0;
  int64_t step_in_epoch = 0;
  int64_t global_step = 0;
  double loss_sum = 0.0;  // sum over the epoch's images so far (this rank's)
  int64_t correct = 0, images = 0;
  double seconds_in_epoch = 0.0;
  bool at_epoch_end = false;  // reported after an epoch's validation
  std::vector<EpochReport> finished;
};

struct TrainOptions {
  int64_t epochs = 1;
  int64_t max_steps = 0;  // stop after this many optimizer steps in all (0: no limit)
  TrainAccuracy train_accuracy = TrainAccuracy::from_training_logits;
  std::shared_ptr<const LrSchedule> schedule;  // per optimizer step; none keeps the lr
  std::function<void(const StepReport&)> on_step;
  std::function<void(const EpochReport&)> on_epoch;
  // Mixed precision with dynamic loss scaling (model on a CUDA device): train()
  // owns a GradScaler with these options for the run; evaluation runs under
  // autocast too.
  bool amp = false;
  cuda::LossScaleOptions loss_scale;
  // With amp: the caller's GradScaler instead (loss_scale unused), so that the
  // caller can checkpoint its state and restore it on resume (train_run does).
  GradScaler* scaler = nullptr;
  // Data parallelism: every step through it (StepOptions::data_parallel);
  // train_data and validation are this rank's shards, and each epoch's
  // figures (loss, accuracy, images/s, validation) are over all ranks.
  dist::DataParallel* data_parallel = nullptr;
  // Resume from this progress (a checkpoint's; the model, optimizer and
  // generators restored by the caller): the epoch's first step_in_epoch
  // batches are skipped (read and dropped, so the loader's shuffle and the
  // augmentation's random draws are where they were), the sums carried on.
  const TrainProgress* resume = nullptr;
  // Called after every step and at the end of every epoch (after its
  // validation) with the progress so far; returning true stops the loop
  // there (train() returns the epochs finished so far). For periodic
  // checkpoints and SIGINT/SIGTERM.
  std::function<bool(const TrainProgress&)> after_step;
};

// One optimizer step on one batch (the model is put in training mode).
StepResult train_step(Module& model, Optimizer& optimizer, const LabeledBatch& batch,
                      TrainAccuracy accuracy = TrainAccuracy::from_training_logits);
StepResult train_step(Module& model, Optimizer& optimizer, const LabeledBatch& batch,
                      const StepOptions& options);

// train_step() in two halves, for callers that run the step differently
// (train/graphed_step.h replays it as a CUDA graph): queue_train_step() puts
// the model in training mode and queues forward, loss, backward and the
// optimizer step (through `scaler` when given) on a batch already on the
// model's device in its memory format (batch_for_device); it reads nothing
// back. read_step_results() then reads what options ask for from the
// step's detached logits and loss (options.scaler must be the step's).
struct QueuedStep {
  LabeledBatch batch;
  Tensor logits;  // detached
  Tensor loss;    // [] f32, detached
};
QueuedStep queue_train_step(Module& model, Optimizer& optimizer, const LabeledBatch& batch,
                            GradScaler* scaler, dist::DataParallel* data_parallel = nullptr);
StepResult read_step_results(Module& model, const QueuedStep& queued, const StepOptions& options);

// The memory format of the model's inputs: channels_last when its 4-D
// weights are laid out that way (model.to(MemoryFormat::channels_last)).
MemoryFormat model_memory_format(const Module& model);

// Trains for options.epochs (or max_steps), validating after each epoch when
// `validation` is given. Returns one report per epoch (with options.resume,
// the resumed run's earlier epochs first).
std::vector<EpochReport> train(Module& model, Optimizer& optimizer, BatchSource& train_data,
                               BatchSource* validation, const TrainOptions& options);

// Loss and accuracy over one pass of `data`, without gradients. The model's
// training flag and buffers are as before afterwards. `autocast`: the forward
// under AutocastGuard (CUDA models; as the mixed-precision training runs).
EvalResult evaluate(Module& model, BatchSource& data,
                    BatchNormMode mode = BatchNormMode::running_statistics, bool autocast = false);

// One evaluation over every rank's shard from each rank's own: loss and
// accuracy weighted by images, images summed, seconds the mean over ranks.
EvalResult combine_over_ranks(const EvalResult& local, dist::ProcessGroup& group);

// The device of the model's parameters (the CPU for a model without any).
Device model_device(const Module& model);

// `batch` ready for a model on `device` in `format`: on a CUDA device the
// images and labels uploaded (when not there already) and the images laid
// out in `format`; on the CPU the batch itself.
LabeledBatch batch_for_device(const LabeledBatch& batch, const Device& device, MemoryFormat format);

// Recomputes every BatchNorm's running statistics as the plain average over
// `batches` training batches (momentum 1/k on the k-th), weights untouched,
// no gradients, dropout off; the BatchNorm momenta are restored afterwards.
// It repairs a collapsed eval accuracy after short training with a small
// momentum (MobileNetV3's 0.01), as PyTorch's momentum=None would.
void recalibrate_batchnorm(Module& model, BatchSource& data, int64_t batches);

// Number of rows whose arg-max logit equals the label.
int64_t count_correct(const Tensor& logits, const Tensor& labels);

}  // namespace b3
