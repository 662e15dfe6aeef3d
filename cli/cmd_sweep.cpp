// `b3 sweep`: the batch-size experiment (experiment/sweep.h), done so that a
// skeptic can accept it:
//
//   b3 sweep --batch-sizes 100,127,128,129,156,511,512,513 --repeats 3 [--epochs N | --steps N]
//
// Each batch size is trained --repeats times by run_training(), interleaved
// round-robin (--shuffle: shuffled within each round, seeded), with a
// discarded warm-up run first and --cooldown seconds between runs. This file
// parses the options, prints each run as it ends, and leaves the files to
// experiment/sweep_report.h: results.md, results.csv, runs.csv, results.json
// (schema "b3-sweep/1", which experiment/pytorch_b3.py writes too) and
// results.png. --compare <results.json of pytorch_b3.py> adds a side-by-side
// with ratios. Under mpirun every run is data-parallel (batch sizes per rank,
// as the reference's 4-GPU runs); rank 0 prints and writes.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/range_checks.h"
#include "distributed/launch.h"
#include "experiment/report.h"
#include "experiment/sweep.h"
#include "experiment/sweep_report.h"

namespace b3::cli {

namespace {

struct SweepArgs {
  experiment::SweepConfig config;
  std::string batch_sizes = "100,127,128,129,156,511,512,513";
  bool no_test = false;
  bool no_validation = false;
  std::string out = "sweep-results";
  std::string compare;
};

void print_run(const experiment::RunRecord& record, int64_t total, int64_t repeats) {
  std::printf("[%lld/%lld] batch %lld", static_cast<long long>(record.order),
              static_cast<long long>(total), static_cast<long long>(record.batch_size));
  if (record.global_batch_size != record.batch_size)
    std::printf(" per rank (global %lld)", static_cast<long long>(record.global_batch_size));
  std::printf(", repeat %lld/%lld: %lld steps, %.3f s, %.1f img/s",
              static_cast<long long>(record.repeat), static_cast<long long>(repeats),
              static_cast<long long>(record.steps), record.train_seconds, record.images_per_second);
  if (record.test_accuracy)
    std::printf(", test acc %.2f%% (%.2f s)", 100 * *record.test_accuracy, *record.test_seconds);
  if (record.gpu && record.gpu->samples > 0)
    std::printf(", SM %.0f MHz, %.0f C", record.gpu->clock_mean_mhz, record.gpu->temperature_max_c);
  std::printf("\n");
  std::fflush(stdout);
}

void print_report(const SweepArgs& args, const experiment::SweepReport& report) {
  const std::string& markdown = report.markdown;
  std::printf("\n%s\n", markdown.substr(0, markdown.find("## How differences")).c_str());
  if (report.comparison) {
    std::printf("Beside %s:\n\n%s%s\n", args.compare.c_str(), report.comparison->markdown.c_str(),
                report.comparison->notes.c_str());
  }
  if (!report.plot.rendered) std::printf("plot: %s\n", report.plot.note.c_str());
  std::printf("wrote %s/results.md, results.csv, runs.csv, results.json%s\n", args.out.c_str(),
              report.plot.rendered ? ", results.png" : "");
}

void run_sweep_command(SweepArgs args, const experiment::SweepOptionsGiven& given,
                       dist::ProcessGroup& group) {
  experiment::SweepConfig& config = args.config;
  config.world_size = group.size();
  const bool writer = group.rank() == 0;  // only rank 0 prints and writes
  // Checks that need no data first, so a typo fails at once.
  config.batch_sizes = report::parse_size_list(args.batch_sizes, "--batch-sizes");
  config.test = !args.no_test;
  config.validation = !args.no_validation;
  experiment::check_sweep_settings(config);
  if (!args.compare.empty() && !std::filesystem::exists(args.compare))
    throw std::invalid_argument("--compare: " + args.compare + " does not exist");
  const std::string notice = experiment::make_cpu_sized_sweep(config, given);
  if (!notice.empty() && writer) std::cerr << notice << "\n";
  // Rank 0 looks for (or downloads) the data first; the others then quietly.
  if (!writer) group.barrier();
  const experiment::SweepPlan plan = experiment::plan_sweep(config, !writer);
  if (writer) group.barrier();
  if (writer) std::filesystem::create_directories(args.out);
  if (writer && group.size() > 1) {
    std::printf(
        "data parallel: %d processes (%s); batch sizes are per process, the global batch "
        "is %d x that\n",
        group.size(), group.backend().c_str(), group.size());
  }

  experiment::SweepObserver observer;
  observer.on_warning = [](const std::string& why) { std::cerr << "warning: " << why << "\n"; };
  observer.on_warmup = [](int64_t batch, int64_t steps) {
    std::printf("warm-up: %lld steps at batch %lld (discarded)\n", static_cast<long long>(steps),
                static_cast<long long>(batch));
    std::fflush(stdout);
  };
  observer.on_run = [&](const experiment::RunRecord& record, int64_t total) {
    print_run(record, total, config.repeats);
  };
  if (!writer) observer = {};
  const experiment::SweepResult result = experiment::run_sweep(plan, observer, &group);
  if (!writer) return;
  print_report(args, experiment::write_sweep_report(args.out, plan.config, result, args.compare));
}

// run_sweep_command in the process group of this launch (a world of one
// without mpirun); a failure on any rank of a larger world ends the whole job.
void run_sweep_launched(const SweepArgs& args, const experiment::SweepOptionsGiven& given) {
  const std::unique_ptr<dist::ProcessGroup> group = dist::init_process_group();
  if (group->size() == 1) {
    run_sweep_command(args, given, *group);
    return;
  }
  try {
    run_sweep_command(args, given, *group);
  } catch (const std::exception& e) {
    dist::abort_job(*group, e.what());
  }
}

}  // namespace

void register_sweep_command(CLI::App& app) {
  auto args = std::make_shared<SweepArgs>();
  TrainRunConfig& c = args->config.base;
  CLI::App* cmd = app.add_subcommand(
      "sweep", "train each batch size several times, interleaved; statistics, tables and a plot");
  cmd->add_option("--batch-sizes", args->batch_sizes,
                  "batch sizes: a list (127,128,129) and/or ranges (120-136, 100-200:8)")
      ->check(CLI::Validator([](std::string& s) { return report::size_list_problem(s); }, "LIST",
                             "batch size list"))
      ->capture_default_str();
  cmd->add_option("--repeats", args->config.repeats, "runs per batch size (mean and std need >= 2)")
      ->check(integer_at_least(1))
      ->capture_default_str();
  cmd->add_option("--cooldown", args->config.cooldown_seconds, "seconds to wait between runs")
      ->check(non_negative());
  cmd->add_option("--warmup-steps", args->config.warmup_steps,
                  "steps of a discarded run before the first one (0: none)")
      ->check(non_negative())
      ->capture_default_str();
  cmd->add_flag("--shuffle", args->config.shuffle,
                "randomize the order of batch sizes within each round (seeded by --seed)");
  cmd->add_option("--device", c.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  const AmpOption amp(cmd);
  cmd->add_option("--data", c.data,
                  "CIFAR-10 binary dir, image folder, or 'synthetic' (default: look, download, "
                  "synthetic)");
  add_model_option(cmd, c.model);
  CLI::Option* image_size =
      cmd->add_option("--image-size", c.image_size, "training image size (224; CPU: 32)")
          ->check(between(8, 4096));
  CLI::Option* epochs = cmd->add_option("--epochs", c.epochs, "epochs per run (10; CPU: 1)")
                            ->check(integer_at_least(1));
  CLI::Option* steps =
      cmd->add_option("--steps", c.steps, "optimizer steps per run instead of whole epochs")
          ->check(integer_at_least(1));
  epochs->excludes(steps);
  CLI::Option* train_limit =
      cmd->add_option("--train-limit", c.train_limit,
                      "use the first N training images (0: all; CPU default 10000)")
          ->check(non_negative());
  CLI::Option* validation_size =
      cmd->add_option("--validation-size", c.validation_size,
                      "images split off for validation (5000; CPU sweep: 1000)")
          ->check(non_negative());
  CLI::Option* test_limit =
      cmd->add_option("--test-limit", c.test_limit,
                      "use the first N test images (0: all; CPU sweep default 1000)")
          ->check(non_negative());
  cmd->add_flag("--no-validation", args->no_validation, "skip the validation pass after epochs");
  cmd->add_flag("--no-test", args->no_test, "skip the final test-set evaluation (inference time)");
  cmd->add_option("--bn-recalibrate", c.bn_recalibrate,
                  "after the test, recompute BatchNorm's running statistics over N training "
                  "batches and test again (0: not done)")
      ->check(non_negative());
  cmd->add_option("--eval-batch-size", c.eval_batch_size, "batch size for validation and test")
      ->check(positive());
  cmd->add_option("--lr", c.lr, "Adam learning rate")->check(positive());
  cmd->add_option("--seed", c.seed, "seed of repeat 1 (repeat r uses seed + r - 1)");
  cmd->add_option("--format", c.format, "memory format: nchw or nhwc")
      ->check(CLI::IsMember({"nchw", "nhwc"}));
  cmd->add_option("--workers", c.workers, "loader threads")->check(non_negative());
  add_bucket_option(cmd, c.bucket_mb);
  cmd->add_option("--out", args->out, "directory for results.md/.csv/.json and results.png")
      ->capture_default_str();
  cmd->add_option("--compare", args->compare,
                  "results.json of experiment/pytorch_b3.py (or another sweep): side by side");
  cmd->callback([=] {
    args->config.base.amp = amp.choice();
    experiment::SweepOptionsGiven given;
    given.image_size = image_size->count() > 0;
    given.epochs = epochs->count() > 0;
    given.train_limit = train_limit->count() > 0;
    given.validation_size = validation_size->count() > 0;
    given.test_limit = test_limit->count() > 0;
    run_sweep_launched(*args, given);
  });
}

}  // namespace b3::cli
