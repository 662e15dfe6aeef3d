// build/b3: the command line. main() builds the CLI11 app (cli/app.h) from the
// commands in cli/cmd_*.cpp, runs the chosen one, and turns exceptions into a
// clear message and a non-zero exit.
#include <exception>
#include <iostream>

#include "cli/app.h"

int main(int argc, char** argv) {
  CLI::App app;
  b3::cli::build_command_line(app);
  try {
    b3::cli::parse_command_line(app, argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::cerr << "b3: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
