// Options that several commands parse alike, declared once so that they read
// the same everywhere:
//
//   AmpOption                  --amp / --no-amp: f16 mixed precision, by
//                              default on for --device cuda and off on the
//                              CPU (resolve_amp() in train/setup.h decides)
//   add_model_option()         --model: mobilenet_v3_large or mobilenet_v3_small
//                              (with_short_names: also "large" and "small")
//   add_bucket_option()        --bucket-mb: the data-parallel gradient bucket
//                              cap in MiB (DDP's bucket_cap_mb, 25)
//   add_workload_options()     a model benchmark's workload: --model,
//                              --classes, --image-size, --batch-size,
//                              --format, --threads, --warmup, --steps, --seed
//   reject_retired_options()   options that commands had and lost, caught
//                              before parsing so that the error names their
//                              replacement instead of CLI11's bare "not
//                              expected" (and --help does not list them):
//                              --precision of layout, maxbatch and profile
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <optional>
#include <string>

#include "experiment/benchmark_workload.h"

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

// Adds --model to `command`, stored in `model`; the caller chains what differs
// (e.g. capture_default_str()).
CLI::Option* add_model_option(CLI::App* command, std::string& model, bool with_short_names = false);

// Adds --bucket-mb to `command`, stored in `mib`.
CLI::Option* add_bucket_option(CLI::App* command, double& mib);

// Adds the options of a benchmark's workload (experiment/benchmark_workload.h)
// to `command`, stored in `workload`; `repetition` names what --warmup and
// --steps count ("steps", "forwards").
void add_workload_options(CLI::App* command, experiment::BenchmarkWorkload& workload,
                          const std::string& repetition);

// Throws std::invalid_argument ("b3 layout: --precision was replaced by
// --amp ...") when the command line `b3 <command> ...` gives an option that
// the command no longer has.
void reject_retired_options(int argc, const char* const* argv);

}  // namespace b3::cli
