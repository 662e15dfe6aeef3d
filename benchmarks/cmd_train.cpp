// `b3 train`: placeholder until the training command is wired to the data pipeline.
#include "benchmarks/commands.h"

namespace b3::cli {

void register_train_command(CLI::App&) {}

}  // namespace b3::cli
