// One training run, configured as the reference benchmark (Raschka's B3) does
// it, shared by `b3 train` (one run) and `b3 sweep` (many runs):
//   MobileNetV3 with a 10-class head, CIFAR-10 45,000 / 5,000 / 10,000,
//   Resize 256 -> RandomCrop 224 (train) / CenterCrop 224 (eval), Adam 5e-4,
//   drop_last, validation after each epoch, test set at the end.
// On a CPU the defaults scale down (32x32 images, a training subset, 1 epoch)
// so that a run ends in minutes; make_cpu_sized() applies that and says so.
// On CUDA the model moves to the GPU (channels_last weights with --format
// nhwc) and trains in f16 mixed precision with loss scaling unless amp is off.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "distributed/process_group.h"
#include "optim/lr_schedule.h"
#include "tensor/device.h"
#include "tensor/tensor.h"
#include "train/trainer.h"

namespace b3 {

struct TrainRunConfig {
  std::string device = "cpu";  // cpu | cuda
  std::string data;            // --data spec ("" = default search, "synthetic", or a directory)
  std::string model = "mobilenet_v3_large";
  int64_t image_size = 224;
  int64_t batch_size = 128;
  int64_t eval_batch_size = 256;
  int64_t epochs = 10;
  int64_t steps = 0;        // stop after this many optimizer steps (0: run the epochs)
  int64_t train_limit = 0;  // use only the first N training images (0: all)
  int64_t test_limit = 0;
  int64_t validation_size = 5000;
  std::string optimizer = "adam";  // adam | adamw | sgd
  double lr = 5e-4;
  // The learning rate per optimizer step (optim/lr_schedule.h): constant,
  // step or cosine (over the run's steps), behind an optional warm-up.
  // step_size 0 means one epoch's steps.
  LrScheduleChoice lr_schedule;
  double momentum = 0.9;  // sgd
  double weight_decay = 0.0;
  uint64_t seed = 0;
  std::string format = "nhwc";  // nchw | nhwc
  // f16 mixed precision with dynamic loss scaling (CUDA only); unset: on for
  // cuda, off for cpu (amp_enabled()).
  std::optional<bool> amp;
  int workers = 2;
  bool eval_train_accuracy = false;  // extra eval-mode forward per step (the reference's way)
  int64_t bn_recalibrate = 0;        // recalibrate BatchNorm over N batches before testing
  bool evaluate_test = true;
  bool progress = true;
  // Off: no validation pass after each epoch (b3 sweep --no-validation).
  bool evaluate_validation = true;
  // Off: the final test runs in eval mode only, without the second pass that
  // uses BatchNorm's batch statistics (halves a sweep's test time).
  bool evaluate_test_batch_statistics = true;
  // Fine-tuning: start from these weights (.pth or safetensors, e.g.
  // torchvision's ImageNet ones) instead of a fresh initialization; with
  // another class count the head keeps its fresh init (models/pretrained.h).
  std::string init_from;
  // "features": train only the classifier (the features' parameters get no
  // gradients and no optimizer state; their BatchNorm layers still use batch
  // statistics and update their running ones in training mode, as in PyTorch
  // with requires_grad_(False)). "none": train everything.
  std::string freeze = "none";
  // "imagenet": normalize inputs with ImageNet's mean and std, as pretrained
  // torchvision weights expect; "none" (the reference benchmark's way).
  std::string normalize = "none";
  // Data parallel (under mpirun): the gradient bucket cap in MiB (DDP's bucket_cap_mb).
  double bucket_mb = 25.0;

  // Checkpoints to resume from (train/resume.h), none of which changes the
  // run's results: into checkpoint_dir every checkpoint_every steps and at
  // each epoch's end (0: never), the newest keep_checkpoints kept.
  std::string checkpoint_dir;
  int64_t checkpoint_every = 0;
  int keep_checkpoints = 2;
  // A checkpoint to resume from, or "auto": the newest in checkpoint_dir (a
  // fresh start when there is none). Its settings must equal this config's
  // (allow_lr_change: but for lr).
  std::string resume;
  bool allow_lr_change = false;
  // CUDA: deterministic convolution algorithms, chosen without timing
  // (cuda::set_deterministic_convolutions), so that a resumed run can equal
  // the uninterrupted one (docs/cuda_determinism.md). The CPU always is.
  bool deterministic = false;
  // Asked after every step: true ends the run there, after writing a
  // checkpoint (b3 train's SIGINT and SIGTERM). With data parallelism the
  // ranks agree: one rank asking stops them all at the same step.
  std::function<bool()> stop_requested;
};

struct TrainRunResult {
  std::string data_description;
  int world_size = 1;  // processes that trained together (data parallel)
  bool synthetic = false;
  std::vector<EpochReport> epochs;
  int64_t steps = 0;
  int64_t train_images = 0;
  double train_seconds = 0.0;  // training steps only (no validation, no test)
  double images_per_second = 0.0;
  std::optional<EvalResult> test;              // eval mode, running statistics
  std::optional<EvalResult> test_batch_stats;  // BatchNorm with batch statistics
  std::optional<EvalResult> test_recalibrated;
  int64_t parameters = 0;
  int64_t trained_parameters = 0;  // those not frozen (--freeze)
  std::string resumed_from;        // the checkpoint the run continued, if any
  std::string notes;               // what resuming said (a learning-rate change)
  std::string init_report;         // what --init-from loaded, re-initialized, skipped
  bool interrupted = false;        // stop_requested ended it before its end
  int64_t stopped_after_step = 0;  // ... after this global step
  std::string last_checkpoint;     // the newest resume checkpoint written, if any
};

// Applies the CPU-sized defaults to options the user did not set; returns a
// one-line notice describing what changed (empty when nothing did).
std::string make_cpu_sized(TrainRunConfig& config, bool image_size_set, bool epochs_set,
                           bool train_limit_set);

// Runs it; `checkpoint_path`, when not empty, receives the final model and
// optimizer state (safetensors).
//
// With a process group of N > 1 ranks (distributed/launch.h; every rank runs
// this with the same config) it is data-parallel training as PyTorch's DDP
// with DistributedSampler: the settings are compared first (a difference
// stops every rank, naming it), rank 0's weights are broadcast, each rank
// trains on its shard of every epoch with --batch-size per rank (a global
// batch of N x batch_size), gradients are averaged, validation and test are
// sharded so each image counts once, and the figures returned are over all
// ranks. Only rank 0 prints progress and writes the checkpoint.
TrainRunResult run_training(const TrainRunConfig& config, const std::string& checkpoint_path = "",
                            dist::ProcessGroup* group = nullptr);

// The config as (name, value) pairs, for comparing ranks' settings (all but
// the data path; run_training compares the data's sizes once it is open).
std::vector<std::pair<std::string, std::string>> config_settings(const TrainRunConfig& config);

// The device the config names, checked to be usable by this build. Under a
// launcher (mpirun, srun) cuda means cuda:<local rank>, one GPU per process
// on each machine, as torchrun's LOCAL_RANK convention.
Device config_device(const TrainRunConfig& config);

// Whether the run uses mixed precision: config.amp, by default on for cuda;
// throws when it is asked for on the CPU.
bool amp_enabled(const TrainRunConfig& config);

// How many training images a run with this config gets (after the
// validation split and --train-limit): the largest batch that gives one step.
// Opens the data as run_training does, so b3 sweep can reject a batch size
// before starting any run. `quiet`: no notice and no download (the ranks
// other than 0 of a data-parallel job, after rank 0 has looked).
int64_t training_set_size(const TrainRunConfig& config, bool quiet = false);

}  // namespace b3
