// One configured training run: data, model, optimizer, the loop, and the
// final test evaluations (see train_run.h).
#include "train/train_run.h"

#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>

#include "data/device_batches.h"
#include "data/loader_source.h"
#include "data/sources.h"
#include "data/transforms.h"
#include "distributed/data_parallel.h"
#include "distributed/launch.h"
#include "layers/conv2d_cuda.h"
#include "models/mobilenet_v3.h"
#include "models/pretrained.h"
#include "models/state_dict.h"
#include "train/resume.h"
#include "train/setup.h"

namespace b3 {

namespace {

// The reference transforms scaled to `image_size`: resize to image_size * 256/224,
// then crop image_size (224 -> Resize 256, Crop 224). When the images already
// have that size, nothing but the scaling to [0, 1].
TransformOptions make_transform(const TrainRunConfig& config, const ImageShape& shape, bool train,
                                const Device& device) {
  TransformOptions t;
  if (config.image_size != shape.height || config.image_size != shape.width) {
    t.resize =
        static_cast<int64_t>(std::lround(static_cast<double>(config.image_size) * 256.0 / 224.0));
    t.crop = config.image_size;
    t.random_crop = train;
  }
  if (config.normalize == "imagenet") {
    t.mean = {0.485, 0.456, 0.406};  // torchvision's ImageNet statistics
    t.std = {0.229, 0.224, 0.225};
  }
  t.format = parse_memory_format(config.format);
  t.device = device;
  return t;
}

std::string format_duration(double seconds) {
  char text[32];
  const int total = static_cast<int>(seconds + 0.5);
  std::snprintf(text, sizeof text, "%d:%02d", total / 60, total % 60);
  return text;
}

// One line per step on a terminal (rewritten in place), else every 10%.
void print_progress(const StepReport& r, int64_t total_epochs, int64_t max_steps) {
  const bool tty = isatty(STDERR_FILENO) != 0;
  const int64_t per_epoch =
      max_steps > 0 ? std::min(max_steps, r.steps_per_epoch) : r.steps_per_epoch;
  const int64_t every = std::max<int64_t>(1, per_epoch / 10);
  if (!tty && r.step_in_epoch % every != 0 && r.step_in_epoch != per_epoch) return;
  const double rate = static_cast<double>(r.step_in_epoch * r.result.images) / r.seconds_in_epoch;
  const double eta = r.seconds_in_epoch / static_cast<double>(r.step_in_epoch) *
                     static_cast<double>(per_epoch - r.step_in_epoch);
  const int width = 24;
  const int filled = static_cast<int>(width * r.step_in_epoch / std::max<int64_t>(per_epoch, 1));
  std::string bar(static_cast<size_t>(std::min(filled, width)), '#');
  bar.resize(width, '.');
  std::fprintf(stderr, "%sepoch %lld/%lld [%s] step %lld/%lld  loss %.4f  %.1f img/s  ETA %s%s",
               tty ? "\r" : "", static_cast<long long>(r.epoch + 1),
               static_cast<long long>(total_epochs), bar.c_str(),
               static_cast<long long>(r.step_in_epoch), static_cast<long long>(per_epoch),
               r.result.loss, rate, format_duration(eta).c_str(), tty ? "   " : "\n");
  if (tty && r.step_in_epoch == per_epoch) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

DataOptions make_data_options(const TrainRunConfig& config) {
  DataOptions data_options;
  data_options.seed = config.seed;
  data_options.train_limit = config.train_limit;
  data_options.test_limit = config.test_limit;
  data_options.validation_size = config.validation_size;
  return data_options;
}

}  // namespace

int64_t training_set_size(const TrainRunConfig& config, bool quiet) {
  DataOptions options = make_data_options(config);
  if (quiet) {
    options.quiet = true;
    options.allow_download = false;
  }
  return open_data(config.data, options).train->size();
}

// The batches a run trains and evaluates on. On a GPU the loader's uint8
// batches go up as they are and the transform runs on the device
// (data/device_batches.h), into f16 under mixed precision; on the CPU the
// loader's threads transform them. Both draw the same crops and flips.
std::unique_ptr<BatchSource> make_batches(std::shared_ptr<const Dataset> dataset,
                                          const LoaderOptions& loader, TransformOptions transform,
                                          bool amp, uint64_t augment_seed = 0) {
  if (transform.device.is_cuda()) {
    if (amp) transform.dtype = DType::f16;
    return std::make_unique<DeviceBatches>(
        std::make_unique<RawLoaderBatches>(std::move(dataset), loader), transform, augment_seed);
  }
  return std::make_unique<LoaderBatchSource>(std::move(dataset), loader, transform, augment_seed);
}

Device config_device(const TrainRunConfig& config) {
  Device device;
  if (config.device == "cpu")
    device = Device::cpu();
  else if (config.device == "cuda")
    device = Device::cuda(dist::read_launch_environment().local_rank);  // one GPU per local rank
  else
    throw std::invalid_argument("--device must be cpu or cuda, got '" + config.device + "'");
  require_device_available(device, "--device " + config.device);
  return device;
}

bool amp_enabled(const TrainRunConfig& config) {
  return resolve_amp(config.amp, config.device == "cuda", "");
}

std::string make_cpu_sized(TrainRunConfig& config, bool image_size_set, bool epochs_set,
                           bool train_limit_set) {
  if (config.device != "cpu") return "";
  std::string notice;
  if (!image_size_set) {
    config.image_size = 32;
    notice += " 32x32 images (no resize)";
  }
  if (!epochs_set) {
    config.epochs = 1;
    notice += ", 1 epoch";
  }
  if (!train_limit_set) {
    config.train_limit = 10000;
    notice += ", the first 10,000 training images";
  }
  if (notice.empty()) return "";
  if (notice.rfind(", ", 0) == 0) notice.erase(0, 1);  // no leading comma when a part is absent
  return "CPU run: defaults scaled down to" + notice +
         " (set --image-size, --epochs, --train-limit 0 to change)";
}

std::vector<std::pair<std::string, std::string>> config_settings(const TrainRunConfig& c) {
  // Not the data path: machines may keep the data in different places (the
  // data's sizes are compared once it is open).
  return {{"device", c.device},
          {"model", c.model},
          {"image_size", std::to_string(c.image_size)},
          {"batch_size", std::to_string(c.batch_size)},
          {"eval_batch_size", std::to_string(c.eval_batch_size)},
          {"epochs", std::to_string(c.epochs)},
          {"steps", std::to_string(c.steps)},
          {"train_limit", std::to_string(c.train_limit)},
          {"test_limit", std::to_string(c.test_limit)},
          {"validation_size", std::to_string(c.validation_size)},
          {"optimizer", c.optimizer},
          {"lr", std::to_string(c.lr)},
          {"lr_schedule", c.lr_schedule.name},
          {"warmup_steps", std::to_string(c.lr_schedule.warmup_steps)},
          {"lr_step_size", std::to_string(c.lr_schedule.step_size)},
          {"lr_gamma", std::to_string(c.lr_schedule.gamma)},
          {"momentum", std::to_string(c.momentum)},
          {"weight_decay", std::to_string(c.weight_decay)},
          {"seed", std::to_string(c.seed)},
          {"format", c.format},
          {"amp", c.amp ? (*c.amp ? "on" : "off") : "default"},
          {"eval_train_accuracy", c.eval_train_accuracy ? "1" : "0"},
          {"bn_recalibrate", std::to_string(c.bn_recalibrate)},
          {"bucket_mb", std::to_string(c.bucket_mb)},
          {"init_from", c.init_from},
          {"freeze", c.freeze},
          {"normalize", c.normalize}};
}

TrainRunResult run_training(const TrainRunConfig& config, const std::string& checkpoint_path,
                            dist::ProcessGroup* group) {
  const int world = group != nullptr ? group->size() : 1;
  const int rank = group != nullptr ? group->rank() : 0;
  if (world > 1) dist::require_same_settings(config_settings(config), *group);
  const Device device = config_device(config);
  const bool amp = amp_enabled(config);
  if (config.batch_size <= 0)
    throw std::invalid_argument("--batch-size must be positive, got " +
                                std::to_string(config.batch_size));
  if (config.epochs <= 0)
    throw std::invalid_argument("--epochs must be positive, got " + std::to_string(config.epochs));
  if (config.steps < 0)
    throw std::invalid_argument("--steps must be >= 0, got " + std::to_string(config.steps));
  if (config.image_size < 8)
    throw std::invalid_argument("--image-size must be at least 8, got " +
                                std::to_string(config.image_size));
  if (config.freeze != "none" && config.freeze != "features")
    throw std::invalid_argument("--freeze must be none or features, got '" + config.freeze + "'");
  if (config.normalize != "none" && config.normalize != "imagenet")
    throw std::invalid_argument("--normalize must be none or imagenet, got '" + config.normalize +
                                "'");
  if (config.deterministic && device.is_cuda())
    cuda::set_deterministic_convolutions(device.index, true);

  // Data parallel: rank 0 finds (or downloads) the data first and alone says
  // what it found; the other ranks then open theirs quietly and never
  // download (N ranks would race to write one folder). What they found is
  // compared below.
  DataOptions data_options = make_data_options(config);
  if (world > 1 && rank != 0) {
    group->barrier();
    data_options.quiet = true;
    data_options.allow_download = false;
  }
  const DataSplits splits = open_data(config.data, data_options);
  if (world > 1 && rank == 0) group->barrier();
  if (world > 1) {
    dist::require_same_settings(
        {{"training images", std::to_string(splits.train->size())},
         {"validation images",
          std::to_string(splits.validation ? splits.validation->size() : int64_t{0})},
         {"test images", std::to_string(splits.test->size())},
         {"classes", std::to_string(splits.train->num_classes())},
         {"synthetic", splits.synthetic ? "yes" : "no"}},
        *group);
  }
  if (splits.train->size() / world < config.batch_size) {
    throw std::invalid_argument(
        "--batch-size " + std::to_string(config.batch_size) + " is larger than the " +
        std::to_string(splits.train->size() / world) + " training images" +
        (world > 1 ? " of each of the " + std::to_string(world) + " ranks" : std::string()));
  }
  const ImageShape shape = splits.train->image_shape();

  MobileNetV3Options model_options;
  model_options.arch = parse_mobilenet_v3_arch(config.model);
  model_options.num_classes = splits.train->num_classes();
  model_options.seed = config.seed;
  MobileNetV3 model(model_options);
  TrainRunResult result;
  if (!config.init_from.empty()) {
    const PretrainedLoad load = load_pretrained(model, read_weights_file(config.init_from),
                                                kMobileNetV3Head, config.init_from);
    result.init_report = describe_pretrained_load(load, config.init_from);
    if (rank == 0) std::fprintf(stderr, "%s", result.init_report.c_str());
  }
  if (config.freeze == "features") {
    for (auto& [name, parameter] : model.named_parameters())
      if (name.rfind("features.", 0) == 0) parameter.set_requires_grad(false);
  }
  // On CUDA the weights in the layout cuDNN's NHWC kernels read; on the CPU
  // they stay NCHW, as before.
  if (device.is_cuda()) prepare_model(model, device, parse_memory_format(config.format));
  std::unique_ptr<Optimizer> optimizer =
      make_optimizer({config.optimizer, config.lr, config.momentum, config.weight_decay}, model);

  LoaderOptions train_loader;
  train_loader.batch_size = config.batch_size;
  train_loader.drop_last = true;
  train_loader.seed = config.seed;
  train_loader.num_workers = config.workers;
  train_loader.shard_rank = rank;
  train_loader.shard_count = world;
  const std::unique_ptr<BatchSource> train_data =
      make_batches(splits.train, train_loader, make_transform(config, shape, true, device), amp,
                   config.seed + 1);
  LoaderOptions eval_loader = train_loader;
  eval_loader.batch_size = config.eval_batch_size;
  eval_loader.drop_last = false;  // sharded, each image in one rank's shard
  // Shuffled (seeded) evaluation: accuracy in eval mode does not depend on the
  // order, but with batch statistics it does: files sorted by class (image
  // folders, converted folders) would give one-class batches whose statistics
  // erase the class signal.
  eval_loader.shuffle = true;
  std::unique_ptr<BatchSource> validation;
  if (splits.validation && config.evaluate_validation) {
    validation = make_batches(splits.validation, eval_loader,
                              make_transform(config, shape, false, device), amp);
  }

  // Resuming: every rank loads the same file (rank 0 wrote it), before the
  // weights are broadcast.
  std::optional<TrainProgress> resume_from;
  std::string resume_path = config.resume;
  if (resume_path == "auto") {
    if (config.checkpoint_dir.empty())
      throw std::invalid_argument("--resume auto needs --out (the folder to look in)");
    const auto newest = newest_checkpoint(config.checkpoint_dir);
    resume_path = newest ? newest->string() : "";
  }
  // Mixed precision: the run's GradScaler lives here, so that checkpoints
  // carry its scale and a resumed run goes on with it.
  std::optional<GradScaler> scaler;
  if (amp) scaler.emplace(device);
  if (!resume_path.empty()) {
    ResumePoint point = load_resume_checkpoint(resume_path, model, *optimizer);
    require_same_run(point.settings, config_settings(config), config.allow_lr_change, resume_path,
                     &result.notes);
    if (scaler) {
      if (point.loss_scale.empty())
        throw std::invalid_argument(resume_path +
                                    ": no loss scale in the checkpoint of a mixed-precision run");
      scaler->load_state_dict(point.loss_scale);
    }
    // The epoch's sums in the file are over all ranks: rank 0 carries them.
    if (rank != 0) {
      point.progress.loss_sum = 0.0;
      point.progress.correct = point.progress.images = 0;
    }
    resume_from = point.progress;
    result.resumed_from = resume_path;
  }

  // After the model exists and is on its device: rank 0's weights and
  // buffers go to every rank.
  std::optional<dist::DataParallel> data_parallel;
  if (world > 1) {
    dist::DataParallelOptions parallel;
    parallel.bucket_bytes = dist::bucket_bytes_of_mib(config.bucket_mb);
    data_parallel.emplace(model, *group, parallel);
  }

  result.world_size = world;
  result.data_description = splits.description;
  result.synthetic = splits.synthetic;
  result.parameters = model.parameter_count();
  for (const Tensor& p : model.parameters())
    if (p.requires_grad()) result.trained_parameters += p.numel();
  TrainOptions options;
  options.epochs = config.epochs;
  options.max_steps = config.steps;
  options.amp = amp;
  options.scaler = scaler ? &*scaler : nullptr;
  options.train_accuracy = config.eval_train_accuracy ? TrainAccuracy::from_eval_forward
                                                      : TrainAccuracy::from_training_logits;
  options.data_parallel = data_parallel ? &*data_parallel : nullptr;
  if (config.progress && rank == 0) {
    options.on_step = [&](const StepReport& r) { print_progress(r, config.epochs, config.steps); };
  }
  options.resume = resume_from ? &*resume_from : nullptr;
  {
    const int64_t per_epoch = train_data->batches_per_epoch();
    const int64_t planned = per_epoch * config.epochs;
    LrScheduleChoice schedule = config.lr_schedule;
    if (schedule.step_size == 0) schedule.step_size = per_epoch;
    if (schedule.name != "constant" || schedule.warmup_steps > 0)
      options.schedule = make_lr_schedule(
          schedule, config.lr, config.steps > 0 ? std::min(config.steps, planned) : planned);
  }
  if (config.checkpoint_every < 0) throw std::invalid_argument("--checkpoint-every must be >= 0");
  if (config.checkpoint_every > 0 && config.checkpoint_dir.empty())
    throw std::invalid_argument("--checkpoint-every needs --out (the folder for the checkpoints)");
  const RunSettings settings = config_settings(config);
  options.after_step = [&](const TrainProgress& progress) {
    bool stop = config.stop_requested && config.stop_requested();
    if (world > 1 && config.stop_requested) {  // one rank stopping stops all, at this step
      int64_t votes = stop ? 1 : 0;
      group->all_reduce_sum(&votes, 1);
      stop = votes > 0;
    }
    const bool due = config.checkpoint_every > 0 &&
                     (progress.at_epoch_end || progress.global_step % config.checkpoint_every == 0);
    if (!config.checkpoint_dir.empty() && (due || stop)) {
      TrainProgress saved = progress;
      if (world > 1) {  // the epoch's sums so far over all ranks
        double sums[3] = {saved.loss_sum, static_cast<double>(saved.correct),
                          static_cast<double>(saved.images)};
        group->all_reduce_sum(sums, 3);
        saved.loss_sum = sums[0];
        saved.correct = static_cast<int64_t>(sums[1]);
        saved.images = static_cast<int64_t>(sums[2]);
      }
      const std::filesystem::path path =
          std::filesystem::path(config.checkpoint_dir) / checkpoint_file_name(saved.global_step);
      if (rank == 0) {
        save_checkpoint(path.string(), model, *optimizer,
                        resume_metadata(saved, settings, model,
                                        scaler ? scaler->state_dict() : NamedTensors{}));
        remove_old_checkpoints(config.checkpoint_dir, config.keep_checkpoints);
      }
      result.last_checkpoint = path.string();
    }
    result.interrupted = stop;
    result.stopped_after_step = progress.global_step;
    return stop;
  };
  result.epochs = train(model, *optimizer, *train_data, validation.get(), options);
  for (const EpochReport& e : result.epochs) {
    result.steps += e.steps;
    result.train_seconds += e.train_seconds;
    result.train_images += e.steps * config.batch_size * world;
  }
  if (result.train_seconds > 0)
    result.images_per_second = static_cast<double>(result.train_images) / result.train_seconds;
  if (result.interrupted) return result;  // no test, no final checkpoint: resume goes on

  if (config.evaluate_test) {
    const std::unique_ptr<BatchSource> test_data =
        make_batches(splits.test, eval_loader, make_transform(config, shape, false, device), amp);
    // Each rank tests its shard; the figures are over all of them.
    const auto test = [&](BatchNormMode mode) {
      const EvalResult local = evaluate(model, *test_data, mode, amp);
      return world > 1 ? combine_over_ranks(local, *group) : local;
    };
    if (data_parallel) data_parallel->before_forward();  // rank 0's running statistics
    result.test = test(BatchNormMode::running_statistics);
    if (config.evaluate_test_batch_statistics)
      result.test_batch_stats = test(BatchNormMode::batch_statistics);
    if (config.bn_recalibrate > 0) {
      recalibrate_batchnorm(model, *train_data, config.bn_recalibrate);
      if (data_parallel) data_parallel->before_forward();  // rank 0's recalibrated statistics
      result.test_recalibrated = test(BatchNormMode::running_statistics);
    }
  }
  if (!checkpoint_path.empty() && rank == 0) {
    save_checkpoint(checkpoint_path, model, *optimizer,
                    {{"model", config.model}, {"steps", std::to_string(result.steps)}});
  }
  return result;
}

}  // namespace b3
