// `b3 layout`: what memory layout does to one training step, at one batch
// size (experiment/layout.h: the variants, the train_step timing; the tables
// and plot in experiment/layout_report.h). This file parses the options and
// prints each measurement and the summary table.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/range_checks.h"
#include "experiment/layout.h"
#include "experiment/layout_report.h"
#include "experiment/report.h"

namespace b3::cli {

namespace {

struct LayoutArgs {
  experiment::LayoutConfig config;
  std::string out = "layout-results";
};

void print_header(const experiment::LayoutPlan& plan) {
  const experiment::LayoutConfig& c = plan.config;
  std::printf(
      "b3 layout: %s, batch %lld%s, %lldx%lld synthetic images, %s, %s; %lld warm-up + "
      "%lld timed steps per measurement, %lld repeats, interleaved\n",
      c.model.c_str(), static_cast<long long>(c.batch_size),
      plan.padded_batch == c.batch_size
          ? " (already a multiple of 8: padding changes nothing)"
          : report::format(" (padded: %lld)", static_cast<long long>(plan.padded_batch)).c_str(),
      static_cast<long long>(c.image_size), static_cast<long long>(c.image_size),
      report::precision_name(plan.amp).c_str(), plan.device_text.c_str(),
      static_cast<long long>(c.warmup), static_cast<long long>(c.steps),
      static_cast<long long>(c.repeats));
}

void print_rows(const std::vector<experiment::LayoutRow>& rows) {
  std::printf("\n%-24s %16s %18s %9s  %s\n", "variant", "step (ms)", "real images/s", "relative",
              "beyond spread vs baseline");
  for (const experiment::LayoutRow& r : rows) {
    std::printf("%-24s %16s %18s %9.3f  %s\n", r.variant.name.c_str(),
                report::format_mean_std(r.step_ms, 2).c_str(),
                report::format_mean_std(r.real_images_per_second, 1).c_str(), r.relative,
                r.verdict.c_str());
  }
}

void run_layout_command(const LayoutArgs& args) {
  const experiment::LayoutPlan plan = experiment::plan_layout(args.config);
  print_header(plan);
  const std::vector<experiment::LayoutMeasurement> results =
      experiment::run_layout(plan, [&](const experiment::LayoutMeasurement& r, int64_t repeat) {
        std::printf("  repeat %lld/%lld  %-22s %9.2f ms/step\n", static_cast<long long>(repeat + 1),
                    static_cast<long long>(plan.config.repeats), r.variant.name.c_str(),
                    1e3 * r.step_seconds.back());
        std::fflush(stdout);
      });
  const std::vector<experiment::LayoutRow> rows = experiment::summarize_layout(results);
  print_rows(rows);
  std::filesystem::create_directories(args.out);
  const plot::PlotFiles files = experiment::write_layout_report(args.out, plan, rows);
  if (!files.rendered) std::printf("plot: %s\n", files.note.c_str());
  std::printf("wrote %s/layout.md, layout.csv%s\n", args.out.c_str(),
              files.rendered ? ", layout.png" : "");
}

}  // namespace

void register_layout_command(CLI::App& app) {
  auto args = std::make_shared<LayoutArgs>();
  experiment::LayoutConfig& c = args->config;
  CLI::App* cmd = app.add_subcommand(
      "layout", "training-step time under NCHW/NHWC, channel rounding, batch padding, alignment");
  cmd->add_option("--device", c.device, "cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  add_model_option(cmd, c.model)->capture_default_str();
  cmd->add_option("--batch-size", c.batch_size, "the batch size studied")
      ->check(integer_at_least(1))
      ->capture_default_str();
  cmd->add_option("--image-size", c.image_size, "image height and width (224; CPU: 32)")
      ->check(between(8, 4096));
  cmd->add_option("--steps", c.steps, "timed steps per measurement (10; CPU: 5)")
      ->check(integer_at_least(1));
  cmd->add_option("--warmup", c.warmup, "untimed steps before each measurement")
      ->check(non_negative())
      ->capture_default_str();
  cmd->add_option("--repeats", c.repeats, "measurements per variant")
      ->check(integer_at_least(1))
      ->capture_default_str();
  cmd->add_option("--misalign-bytes", c.misalign_bytes,
                  "offset past the alignment boundary for the misaligned variant")
      ->capture_default_str();
  const AmpOption amp(cmd);
  cmd->add_flag("--full", c.full, "all 24 combinations instead of one factor at a time");
  cmd->add_option("--out", args->out, "directory for layout.md, layout.csv, layout.png")
      ->capture_default_str();
  cmd->callback([args, amp] {
    args->config.amp = amp.choice();
    run_layout_command(*args);
  });
}

}  // namespace b3::cli
