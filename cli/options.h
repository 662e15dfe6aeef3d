// Options that several commands parse alike, declared once so that they read
// the same everywhere:
//
//   add_amp_option()        --amp / --no-amp: f16 mixed precision, by default
//                           on for --device cuda and off on the CPU
//                           (resolve_amp() in train/setup.h decides)
//   add_retired_precision() the --precision option that layout, maxbatch and
//                           profile had, hidden: given, the command stops with
//                           an error that names --amp / --no-amp instead of
//                           CLI11's bare "not expected"
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <optional>
#include <string>

namespace b3::cli {

class AmpOption {
 public:
  explicit AmpOption(CLI::App* command);
  // Unset when neither --amp nor --no-amp was given (the device decides).
  std::optional<bool> choice() const;

 private:
  std::shared_ptr<bool> value_;
  CLI::Option* option_ = nullptr;
};

class RetiredPrecisionOption {
 public:
  RetiredPrecisionOption(CLI::App* command, std::string command_name);
  // Throws std::invalid_argument naming the replacement when --precision was
  // given; call it first in the command's callback.
  void reject_if_given() const;

 private:
  CLI::Option* option_ = nullptr;
  std::string command_name_;
};

}  // namespace b3::cli
