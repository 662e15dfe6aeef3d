// The whole command line of build/b3 as one CLI11 app: its description, the
// --version flag and every subcommand of cli/commands.h. main.cpp parses
// with it; the command-line fuzz target (fuzz/) parses random argument
// vectors with the same app, its callbacks removed so that nothing runs.
#pragma once

#include <CLI/CLI.hpp>

namespace b3::cli {

void build_command_line(CLI::App& app);

// Parses argv as main() does: the retired options first (cli/options.h),
// then CLI11. Throws CLI::ParseError (including --help and --version), or
// std::exception from a command's options or, unless removed, its callback.
void parse_command_line(CLI::App& app, int argc, const char* const* argv);

}  // namespace b3::cli
