// `b3 train`: one training run with the reference benchmark's settings (or
// CPU-sized ones; run_training() in train/train_run.h), a progress bar, a
// summary, and files in --out: metrics.csv and metrics.json
// (train/run_metrics.h) and checkpoint.safetensors. This file parses the
// options and prints. Under mpirun (or srun) it trains data-parallel, one
// process per rank, rank 0 printing and writing (train/train_run.h).
// --checkpoint-every / --resume make a run resumable (train/resume.h);
// SIGINT and SIGTERM stop it with a checkpoint and exit 130 / 143
// (train/stop_signals.h).
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/range_checks.h"
#include "distributed/launch.h"
#include "train/run_metrics.h"
#include "train/stop_signals.h"
#include "train/train_run.h"

namespace b3::cli {

namespace {

void print_eval(const char* what, const std::optional<EvalResult>& e) {
  if (!e) return;
  std::printf("%-34s %6.2f%%  (loss %.4f, %lld images, %.2f s)\n", what, 100.0 * e->accuracy,
              e->loss, static_cast<long long>(e->images), e->seconds);
}

void print_epochs(const TrainRunConfig& config, const TrainRunResult& r) {
  std::printf("data: %s\n", r.data_description.c_str());
  const std::string frozen = r.trained_parameters == r.parameters
                                 ? ""
                                 : " (" + std::to_string(r.trained_parameters) +
                                       " trained, --freeze " + config.freeze + ")";
  std::printf(
      "model: %s, %lld parameters%s, %s, batch %lld, %s, %s, device %s\n", config.model.c_str(),
      static_cast<long long>(r.parameters), frozen.c_str(), config.format.c_str(),
      static_cast<long long>(config.batch_size), config.optimizer.c_str(),
      amp_enabled(config) ? "f16 mixed precision (loss scaling)" : "f32", config.device.c_str());
  for (const EpochReport& e : r.epochs) {
    std::printf("epoch %lld: train loss %.4f acc %.2f%%  %.1f s  %.1f img/s",
                static_cast<long long>(e.epoch + 1), e.train_loss, 100 * e.train_accuracy,
                e.train_seconds, e.images_per_second);
    if (e.validation)
      std::printf("  | val loss %.4f acc %.2f%%", e.validation->loss, 100 * e.validation->accuracy);
    std::printf("\n");
  }
  std::printf("train time: %.1f s for %lld steps (%.1f img/s; validation and test not included)\n",
              r.train_seconds, static_cast<long long>(r.steps), r.images_per_second);
}

void print_tests(const TrainRunResult& r) {
  print_eval("test accuracy, eval mode:", r.test);
  print_eval("test accuracy, batch statistics:", r.test_batch_stats);
  print_eval("test accuracy, BN recalibrated:", r.test_recalibrated);
  if (r.test && r.test_batch_stats && r.test->accuracy + 0.05 < r.test_batch_stats->accuracy) {
    std::printf(
        "note: eval mode is far below batch statistics: with BatchNorm momentum 0.01 the running "
        "statistics\n"
        "      still lag the weights after %lld steps (PyTorch behaves the same). "
        "--bn-recalibrate N repairs it.\n",
        static_cast<long long>(r.steps));
  }
  if (r.test) std::printf("inference time on the test set: %.2f s\n", r.test->seconds);
}

// Returns the exit status: 0, or 128 + the signal that stopped the run.
int run_train(TrainRunConfig config, const std::string& out_dir, dist::ProcessGroup& group) {
  const bool writer = group.rank() == 0;  // only rank 0 prints results and writes files
  std::filesystem::path dir;
  if (!out_dir.empty()) {
    dir = out_dir;
    if (writer) std::filesystem::create_directories(dir);
  }
  config.checkpoint_dir = out_dir;
  const StopSignals signals;
  config.stop_requested = [&signals] { return signals.requested(); };
  const TrainRunResult r =
      run_training(config, dir.empty() ? "" : (dir / "checkpoint.safetensors").string(), &group);
  if (!writer) return r.interrupted ? signals.exit_status() : 0;
  if (!r.resumed_from.empty()) std::printf("resumed from %s\n", r.resumed_from.c_str());
  if (!r.notes.empty()) std::printf("note: %s\n", r.notes.c_str());
  if (r.interrupted) {
    std::printf("stopped by %s after step %lld; ", signals.signal_name(),
                static_cast<long long>(r.stopped_after_step));
    if (r.last_checkpoint.empty()) {
      std::printf("no checkpoint written (give --out to get one)\n");
    } else {
      std::printf(
          "checkpoint %s\nresume with the same options and --resume %s (or --resume auto)\n",
          r.last_checkpoint.c_str(), r.last_checkpoint.c_str());
    }
    std::fflush(stdout);
    return signals.exit_status();
  }
  if (r.world_size > 1) {
    std::printf("data parallel: %d processes (%s), batch %lld per process, global batch %lld\n",
                r.world_size, group.backend().c_str(), static_cast<long long>(config.batch_size),
                static_cast<long long>(config.batch_size * r.world_size));
  }
  print_epochs(config, r);
  print_tests(r);
  if (!dir.empty()) {
    write_run_metrics(dir, config, r);
    std::printf("wrote %s/metrics.csv, metrics.json, checkpoint.safetensors\n",
                dir.string().c_str());
  }
  return 0;
}

// run_train in the process group of this launch (a world of one without
// mpirun); a failure on any rank of a larger world ends the whole job.
int run_train_launched(const TrainRunConfig& config, const std::string& out_dir) {
  const std::unique_ptr<dist::ProcessGroup> group = dist::init_process_group();
  if (group->size() == 1) return run_train(config, out_dir, *group);
  try {
    return run_train(config, out_dir, *group);
  } catch (const std::exception& e) {
    dist::abort_job(*group, e.what());
  }
}

}  // namespace

void register_train_command(CLI::App& app) {
  auto config = std::make_shared<TrainRunConfig>();
  auto out_dir = std::make_shared<std::string>();
  CLI::App* cmd =
      app.add_subcommand("train", "one training run (the reference benchmark's settings)");
  cmd->add_option("--device", config->device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  const AmpOption amp(cmd);
  cmd->add_option(
      "--data", config->data,
      "CIFAR-10 binary dir, image folder, or 'synthetic' (default: look, download, synthetic)");
  add_model_option(cmd, config->model);
  CLI::Option* image_size =
      cmd->add_option("--image-size", config->image_size, "training image size (224; CPU: 32)");
  cmd->add_option("--batch-size", config->batch_size, "batch size")->check(positive());
  cmd->add_option("--eval-batch-size", config->eval_batch_size,
                  "batch size for validation and test")
      ->check(positive());
  CLI::Option* epochs =
      cmd->add_option("--epochs", config->epochs, "epochs (10; CPU: 1)")->check(positive());
  cmd->add_option("--steps", config->steps, "stop after N optimizer steps (0: all)")
      ->check(non_negative());
  CLI::Option* train_limit =
      cmd->add_option("--train-limit", config->train_limit,
                      "use the first N training images (0: all; CPU default 10000)")
          ->check(non_negative());
  cmd->add_option("--test-limit", config->test_limit, "use the first N test images (0: all)")
      ->check(non_negative());
  cmd->add_option("--validation-size", config->validation_size, "images split off for validation")
      ->check(non_negative());
  cmd->add_option("--optimizer", config->optimizer, "adam, adamw or sgd")
      ->check(CLI::IsMember({"adam", "adamw", "sgd"}));
  cmd->add_option("--lr", config->lr, "learning rate")->check(positive());
  cmd->add_option("--lr-schedule", config->lr_schedule.name,
                  "learning rate per step: constant, step (x --lr-gamma every --lr-step-size "
                  "steps) or cosine (to 0 over the run)")
      ->check(CLI::IsMember({"constant", "step", "cosine"}))
      ->capture_default_str();
  cmd->add_option("--warmup-steps", config->lr_schedule.warmup_steps,
                  "linear learning-rate warm-up from 0 over N steps (0: none)")
      ->check(non_negative());
  cmd->add_option("--lr-step-size", config->lr_schedule.step_size,
                  "--lr-schedule step: steps between decays (0: one epoch)")
      ->check(non_negative());
  cmd->add_option("--lr-gamma", config->lr_schedule.gamma, "--lr-schedule step: decay factor")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--momentum", config->momentum, "SGD momentum")->check(non_negative());
  cmd->add_option("--weight-decay", config->weight_decay, "weight decay")->check(non_negative());
  cmd->add_option("--seed", config->seed, "seed of weights, split, shuffling and crops");
  cmd->add_option("--format", config->format, "memory format: nchw or nhwc")
      ->check(CLI::IsMember({"nchw", "nhwc"}));
  cmd->add_option("--workers", config->workers, "loader threads")->check(non_negative());
  cmd->add_flag("--eval-train-accuracy", config->eval_train_accuracy,
                "train accuracy from an extra eval-mode forward per step (as the reference)");
  cmd->add_option(
         "--bn-recalibrate", config->bn_recalibrate,
         "recompute BatchNorm running statistics over N training batches before the final test")
      ->check(non_negative());
  add_bucket_option(cmd, config->bucket_mb);
  cmd->add_option("--out", *out_dir,
                  "directory for metrics.csv, metrics.json and checkpoint.safetensors");
  cmd->add_option("--checkpoint-every", config->checkpoint_every,
                  "write a resume checkpoint into --out every N steps and at each epoch's end "
                  "(0: never)")
      ->check(non_negative());
  cmd->add_option("--keep-checkpoints", config->keep_checkpoints,
                  "resume checkpoints to keep (older ones go once a newer one is on disk)")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--resume", config->resume,
                  "continue the run from a checkpoint-step*.safetensors, or 'auto': the newest "
                  "in --out (none: a fresh start)");
  cmd->add_flag("--allow-lr-change", config->allow_lr_change,
                "let --lr differ from the resumed run's (said in the output)");
  cmd->add_option("--init-from", config->init_from,
                  "start from these weights (.pth or .safetensors, e.g. torchvision's); another "
                  "class count re-initializes the classifier's last layer");
  cmd->add_option("--freeze", config->freeze, "none, or features: train only the classifier")
      ->check(CLI::IsMember({"none", "features"}));
  cmd->add_option("--normalize", config->normalize,
                  "none, or imagenet: ImageNet's mean and std, as pretrained weights expect")
      ->check(CLI::IsMember({"none", "imagenet"}));
  cmd->add_flag("--deterministic", config->deterministic,
                "CUDA: deterministic convolution algorithms chosen without timing, so a resumed "
                "run can equal the uninterrupted one (the CPU always is)");
  cmd->callback([=] {
    config->amp = amp.choice();
    const std::string notice = make_cpu_sized(*config, image_size->count() > 0, epochs->count() > 0,
                                              train_limit->count() > 0);
    if (!notice.empty() && dist::read_launch_environment().rank == 0) std::cerr << notice << "\n";
    const int status = run_train_launched(*config, *out_dir);
    if (status != 0) {
      std::fflush(nullptr);
      std::exit(status);
    }
  });
}

}  // namespace b3::cli
