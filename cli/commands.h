// The subcommands of build/b3. Each lives in its own file (cmd_<name>.cpp),
// registers its options on the CLI11 app, calls the library (train/,
// experiment/, data/, models/) and prints; main.cpp only wires them together.
// A command's callback throws on bad input; main prints "b3: error: ..." and
// exits 1 (CLI11's own argument errors exit non-zero with the usage).
#pragma once

#include <CLI/CLI.hpp>

namespace b3::cli {

void register_info_command(CLI::App& app);   // cmd_info.cpp
void register_train_command(CLI::App& app);  // cmd_train.cpp
void register_run_command(CLI::App& app);    // cmd_run.cpp
void register_data_commands(CLI::App& app);  // cmd_data.cpp: data download|convert|info, bench-data
void register_parity_command(CLI::App& app);       // cmd_parity.cpp
void register_bench_step_command(CLI::App& app);   // cmd_bench_step.cpp: time train_step
void register_bench_infer_command(CLI::App& app);  // cmd_bench_infer.cpp: time eval forward

// The batch-size experiment and its measurements (experiment/).
void register_sweep_command(CLI::App& app);     // cmd_sweep.cpp
void register_maxbatch_command(CLI::App& app);  // cmd_maxbatch.cpp
void register_suggest_command(CLI::App& app);   // cmd_suggest.cpp
void register_gemm_command(CLI::App& app);      // cmd_gemm.cpp
void register_layout_command(CLI::App& app);    // cmd_layout.cpp
void register_profile_command(CLI::App& app);   // cmd_profile.cpp
void register_stepcost_command(CLI::App& app);  // cmd_stepcost.cpp: FLOPs and memory floor

}  // namespace b3::cli
