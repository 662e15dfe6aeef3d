// libFuzzer target: b3's command line (cli/app.h) on random argument vectors.
// An input is split at NUL bytes into at most 64 arguments after "b3". The
// parse stops before any command's callback, so what runs is the parsing
// alone: subcommands, option names and values, their checks, the retired
// options.
// Bad arguments must end as CLI::ParseError or another std::exception (what
// main() turns into a message and an exit status), never as a crash.
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "cli/app.h"
#include "tests/fuzz/broken_promise.h"

namespace {

constexpr size_t kMaxArguments = 64;

// Thrown by the top-level app's parse-complete callback, which CLI11 runs
// after every option is parsed and checked and before any command's
// callback. (Removing the callbacks instead would free the option values
// the commands' callbacks own.)
struct ParsedWithoutRunning {};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> arguments{"b3"};
  std::string current;
  for (size_t i = 0; i < size && arguments.size() <= kMaxArguments; ++i) {
    if (data[i] == 0) {
      arguments.push_back(current);
      current.clear();
    } else {
      current.push_back(static_cast<char>(data[i]));
    }
  }
  if (!current.empty() && arguments.size() <= kMaxArguments) arguments.push_back(current);
  std::vector<const char*> argv;
  for (const std::string& argument : arguments) argv.push_back(argument.c_str());

  CLI::App app;
  b3::cli::build_command_line(app);
  app.parse_complete_callback([] { throw ParsedWithoutRunning{}; });
  try {
    b3::cli::parse_command_line(app, static_cast<int>(argv.size()), argv.data());
  } catch (const ParsedWithoutRunning&) {
  } catch (const CLI::ParseError&) {
    // CLI11's own messages quote the arguments as given: what the user typed.
  } catch (const std::exception& refusal) {
    b3::fuzz::check_refusal(refusal);
  }
  return 0;
}
