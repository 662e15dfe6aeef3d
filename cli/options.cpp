// The shared options of the command line (see options.h).
#include "cli/options.h"

#include <stdexcept>

namespace b3::cli {

AmpOption::AmpOption(CLI::App* command) : value_(std::make_shared<bool>(false)) {
  option_ = command->add_flag(
      "--amp,!--no-amp", *value_,
      "f16 mixed precision with loss scaling (CUDA only; default on for cuda, --no-amp: f32)");
}

std::optional<bool> AmpOption::choice() const {
  if (option_->count() == 0) return std::nullopt;
  return *value_;
}

RetiredPrecisionOption::RetiredPrecisionOption(CLI::App* command, std::string command_name)
    : command_name_(std::move(command_name)) {
  // Group "" hides it from --help; 0 or 1 values, so that both "--precision"
  // and "--precision f32" reach the error below.
  option_ = command->add_option("--precision")->expected(0, 1)->group("");
}

void RetiredPrecisionOption::reject_if_given() const {
  if (option_->count() == 0) return;
  throw std::invalid_argument(command_name_ +
                              ": --precision was replaced by --amp (f16 mixed precision, the "
                              "default on cuda) and --no-amp (f32)");
}

}  // namespace b3::cli
