// build_command_line and parse_command_line (cli/app.h).
#include "cli/app.h"

#include <string>

#include "cli/commands.h"
#include "cli/options.h"
#include "tensor/device.h"

namespace b3::cli {

void build_command_line(CLI::App& app) {
  app.description("b3: does the batch size matter? MobileNetV3 on CIFAR-10, measured.");
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("b3 (CUDA backend: ") +
                                        (built_with_cuda() ? "built" : "not built") + ")");
  register_run_command(app);
  register_info_command(app);
  register_train_command(app);
  register_data_commands(app);
  register_parity_command(app);
  register_bench_step_command(app);
  register_bench_infer_command(app);
  register_sweep_command(app);
  register_maxbatch_command(app);
  register_suggest_command(app);
  register_gemm_command(app);
  register_layout_command(app);
  register_profile_command(app);
  register_stepcost_command(app);
}

void parse_command_line(CLI::App& app, int argc, const char* const* argv) {
  reject_retired_options(argc, argv);
  app.parse(argc, argv);
}

}  // namespace b3::cli
