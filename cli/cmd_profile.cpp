// `b3 profile --batch-sizes 127,128`: where the time of a training step goes,
// layer by layer, at each batch size side by side (experiment/profile.h: the
// cut forward and backward pieces and the uncut train_step; the table and
// plot in experiment/profile_report.h; the cuDNN columns in
// experiment/conv_algorithms.h). This file parses the options and prints the
// progress and the table.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/range_checks.h"
#include "experiment/profile.h"
#include "experiment/profile_report.h"
#include "experiment/report.h"

namespace b3::cli {

namespace {

struct ProfileArgs {
  experiment::ProfileConfig config;
  std::string out = "profile-results";
};

void run_profile_command(const ProfileArgs& args) {
  const experiment::ProfilePlan plan = experiment::plan_profile(args.config);
  const experiment::ProfileConfig& c = plan.config;
  std::printf(
      "b3 profile: %s, %s, %s, %lldx%lld synthetic images, %s; median of %lld profiled "
      "steps after %lld warm-up\n",
      c.model.c_str(), c.format.c_str(), report::precision_name(plan.amp).c_str(),
      static_cast<long long>(c.image_size), static_cast<long long>(c.image_size),
      plan.device_text.c_str(), static_cast<long long>(c.repeats),
      static_cast<long long>(c.warmup));
  const experiment::ProfileResult result = experiment::run_profile(plan, [](int64_t batch) {
    std::printf("  profiling batch %lld...\n", static_cast<long long>(batch));
    std::fflush(stdout);
  });
  std::filesystem::create_directories(args.out);
  const experiment::ProfileFiles files = experiment::write_profile_report(args.out, plan, result);
  std::printf("\n%s\n", files.markdown.c_str());
  if (!files.plot.rendered) std::printf("plot: %s\n", files.plot.note.c_str());
  std::printf("wrote %s/profile.md, profile.csv%s%s\n", args.out.c_str(),
              files.plot.rendered ? ", profile.png" : "",
              plan.device.is_cuda() ? ", cudnn_algorithms.txt" : "");
}

}  // namespace

void register_profile_command(CLI::App& app) {
  auto args = std::make_shared<ProfileArgs>();
  experiment::ProfileConfig& c = args->config;
  CLI::App* cmd = app.add_subcommand(
      "profile", "per-layer forward and backward time at each batch size, side by side");
  cmd->add_option("--device", c.device, "cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  add_model_option(cmd, c.model)->capture_default_str();
  cmd->add_option("--batch-sizes", c.batch_sizes, "batch sizes to compare, e.g. 127,128")
      ->check(CLI::Validator([](std::string& s) { return report::size_list_problem(s); }, "LIST",
                             "batch size list"))
      ->capture_default_str();
  cmd->add_option("--image-size", c.image_size, "image height and width (224; CPU: 32)")
      ->check(between(8, 4096));
  cmd->add_option("--repeats", c.repeats, "profiled steps per batch size (median)")
      ->check(integer_at_least(1))
      ->capture_default_str();
  cmd->add_option("--warmup", c.warmup, "unrecorded steps first")
      ->check(non_negative())
      ->capture_default_str();
  cmd->add_option("--format", c.format, "memory format: nchw or nhwc")
      ->check(CLI::IsMember({"nchw", "nhwc"}))
      ->capture_default_str();
  const AmpOption amp(cmd);
  cmd->add_option("--out", args->out, "directory for profile.md, profile.csv, profile.png")
      ->capture_default_str();
  cmd->callback([args, amp] {
    args->config.amp = amp.choice();
    run_profile_command(*args);
  });
}

}  // namespace b3::cli
