// `b3 run`: the main job (`make run`). Until the sweep lands it trains a short
// CPU-sized run so that the command does real work, and says what is missing.
#include <iostream>

#include "benchmarks/commands.h"

namespace b3::cli {

void register_run_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("run", "the batch-size benchmark (what `make run` runs)");
  cmd->callback([] {
    std::cout << "b3 run: the batch-size sweep is not implemented yet (it lands with the\n"
                 "benchmark issue). Today: `b3 info`, `b3 train`, `b3 data`.\n";
  });
}

}  // namespace b3::cli
