// The sweep command line of `b3 run` (see standard_run.h).
#include "experiment/standard_run.h"

#include <unistd.h>
#include <ctime>
#include <stdexcept>

namespace b3::experiment {

std::string standard_sweep_command(const std::string& executable, bool gpu, const std::string& data,
                                   const std::string& out) {
  std::string command = shell_quote(executable) + " sweep";
  if (gpu) {
    command +=
        " --device cuda --batch-sizes 100,127,128,129,156,511,512,513 --repeats 3 --epochs 1";
  } else {
    command +=
        " --device cpu --image-size 32 --batch-sizes 100,127,128,129,156 --repeats 2 --steps 20";
  }
  if (!data.empty()) command += " --data " + shell_quote(data);
  return command + " --out " + shell_quote(out);
}

std::string default_run_directory() {
  char stamp[32];
  const std::time_t now = std::time(nullptr);
  std::tm parts{};
  localtime_r(&now, &parts);
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &parts);
  return std::string("results/run-") + stamp;
}

std::string self_executable() {
  char path[4096];
  const ssize_t length = readlink("/proc/self/exe", path, sizeof path - 1);
  if (length <= 0)
    throw std::runtime_error("b3 run: cannot find its own executable (/proc/self/exe)");
  path[length] = '\0';
  return path;
}

std::string shell_quote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

}  // namespace b3::experiment
