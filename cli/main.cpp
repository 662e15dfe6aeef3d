// build/b3: the command line. main() builds the CLI11 app from the commands in
// cli/cmd_*.cpp, runs the chosen one, and turns exceptions into a clear
// message and a non-zero exit.
#include <exception>
#include <iostream>

#include "cli/commands.h"
#include "cli/options.h"
#include "tensor/device.h"

int main(int argc, char** argv) {
  CLI::App app{"b3: does the batch size matter? MobileNetV3 on CIFAR-10, measured."};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("b3 (CUDA backend: ") +
                                        (b3::built_with_cuda() ? "built" : "not built") + ")");
  b3::cli::register_run_command(app);
  b3::cli::register_info_command(app);
  b3::cli::register_train_command(app);
  b3::cli::register_data_commands(app);
  b3::cli::register_parity_command(app);
  b3::cli::register_bench_step_command(app);
  b3::cli::register_sweep_command(app);
  b3::cli::register_maxbatch_command(app);
  b3::cli::register_suggest_command(app);
  b3::cli::register_gemm_command(app);
  b3::cli::register_layout_command(app);
  b3::cli::register_profile_command(app);
  b3::cli::register_stepcost_command(app);
  try {
    b3::cli::reject_retired_options(argc, argv);
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::cerr << "b3: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
