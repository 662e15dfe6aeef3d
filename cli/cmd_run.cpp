// `b3 run`: the main job, what `make run` runs: `b3 sweep` with the seed
// experiment's defaults for the machine at hand (experiment/standard_run.h),
// printed before it starts so that anyone can rerun or vary it. This file
// parses the options, prints the command and runs it.
#include <cstdlib>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>

#include "cli/commands.h"
#include "experiment/standard_run.h"
#include "tensor/device.h"

namespace b3::cli {

namespace {

struct RunArgs {
  std::string data;
  std::string out;
};

}  // namespace

void register_run_command(CLI::App& app) {
  auto args = std::make_shared<RunArgs>();
  CLI::App* cmd = app.add_subcommand(
      "run", "the batch-size benchmark with default settings (what `make run` runs)");
  cmd->add_option(
      "--data", args->data,
      "CIFAR-10 binary dir, image folder, or 'synthetic' (default: look, download, synthetic)");
  cmd->add_option("--out", args->out, "results directory (default: results/run-<date>)");
  cmd->callback([args] {
    const bool gpu = cuda_device_count() > 0;
    const std::string out = args->out.empty() ? experiment::default_run_directory() : args->out;
    const std::string command =
        experiment::standard_sweep_command(experiment::self_executable(), gpu, args->data, out);
    std::cout << "b3 run: " << (gpu ? "GPU found" : "no GPU: a CPU-sized sweep") << "; running\n  "
              << command << "\n"
              << std::flush;
    const int status = std::system(command.c_str());
    if (status != 0)
      throw std::runtime_error("b3 run: the sweep failed (status " + std::to_string(status) + ")");
  });
}

}  // namespace b3::cli
