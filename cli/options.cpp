// The shared options of the command line (see options.h).
#include "cli/options.h"

#include <stdexcept>
#include <string>
#include <vector>

#include "cli/range_checks.h"

namespace b3::cli {

namespace {

struct RetiredOption {
  const char* command;
  const char* option;
  const char* replacement;
};

constexpr const char* kPrecisionReplacement =
    "--amp (f16 mixed precision, the default on cuda) and --no-amp (f32)";

constexpr RetiredOption kRetiredOptions[] = {
    {"layout", "--precision", kPrecisionReplacement},
    {"maxbatch", "--precision", kPrecisionReplacement},
    {"profile", "--precision", kPrecisionReplacement},
};

}  // namespace

AmpOption::AmpOption(CLI::App* command) : value_(std::make_shared<bool>(false)) {
  option_ = command->add_flag(
      "--amp,!--no-amp", *value_,
      "f16 mixed precision with loss scaling (CUDA only; default on for cuda, --no-amp: f32)");
}

std::optional<bool> AmpOption::choice() const {
  if (option_->count() == 0) return std::nullopt;
  return *value_;
}

CLI::Option* add_bucket_option(CLI::App* command, double& mib) {
  return command
      ->add_option("--bucket-mb", mib,
                   "data parallel (under mpirun): gradient bucket size in MiB, as DDP's "
                   "bucket_cap_mb")
      ->check(positive())
      ->capture_default_str();
}

void reject_retired_options(int argc, const char* const* argv) {
  if (argc < 2) return;
  const std::string command = argv[1];
  for (const RetiredOption& retired : kRetiredOptions) {
    if (command != retired.command) continue;
    const std::string option = retired.option;
    for (int i = 2; i < argc; ++i) {
      const std::string arg = argv[i];
      if (arg == "--") break;  // what follows is not an option
      if (arg != option && arg.rfind(option + "=", 0) != 0) continue;
      throw std::invalid_argument("b3 " + command + ": " + option + " was replaced by " +
                                  retired.replacement);
    }
  }
}

CLI::Option* add_model_option(CLI::App* command, std::string& model, bool with_short_names) {
  std::vector<std::string> names{"mobilenet_v3_large", "mobilenet_v3_small"};
  if (with_short_names) names.insert(names.end(), {"large", "small"});
  return command->add_option("--model", model, "mobilenet_v3_large or mobilenet_v3_small")
      ->check(CLI::IsMember(names));
}

void add_workload_options(CLI::App* command, experiment::BenchmarkWorkload& workload,
                          const std::string& repetition) {
  add_model_option(command, workload.model, true);
  command->add_option("--classes", workload.classes, "classes")->check(positive());
  command->add_option("--image-size", workload.image_size, "image height and width")
      ->check(positive());
  command->add_option("--batch-size", workload.batch_size, "batch size")->check(positive());
  command->add_option("--format", workload.format, "memory format: nchw or nhwc")
      ->check(CLI::IsMember({"nchw", "nhwc"}));
  command->add_option("--threads", workload.threads, "OpenMP threads")->check(positive());
  command->add_option("--warmup", workload.warmup, "untimed " + repetition + " first")
      ->check(non_negative());
  command->add_option("--steps", workload.steps, "timed " + repetition)->check(positive());
  command->add_option("--seed", workload.seed, "seed of weights and data");
}

}  // namespace b3::cli
