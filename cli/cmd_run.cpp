// `b3 run`: the main job, what `make run` runs. It is `b3 sweep` with the
// defaults of the seed experiment for the machine at hand, printed before it
// starts so that anyone can rerun or vary it:
//   CPU: MobileNetV3-Large at 32x32, batch sizes 100,127,128,129,156, 2 repeats
//        of 20 steps each (minutes, not hours; a CPU cannot do 224x224 epochs);
//   GPU: 224x224, the seed's batch sizes 100,127,128,129,156,511,512,513,
//        3 repeats of 1 epoch each, mixed precision (f16 autocast, loss scaling).
// Data: --data as everywhere (default: data/cifar-10-batches-bin, else a
// download, else synthetic data with a loud notice).
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <iostream>
#include <memory>
#include <stdexcept>

#include "cli/commands.h"
#include "tensor/device.h"

namespace b3::cli {

namespace {

struct RunArgs {
  std::string data;
  std::string out;
};

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
    std::string out = args->out;
    if (out.empty()) {
      char stamp[32];
      const std::time_t now = std::time(nullptr);
      std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
      out = std::string("results/run-") + stamp;
    }
    std::string command = shell_quote(self_executable()) + " sweep";
    if (gpu) {
      command +=
          " --device cuda --batch-sizes 100,127,128,129,156,511,512,513 --repeats 3 --epochs 1";
    } else {
      command +=
          " --device cpu --image-size 32 --batch-sizes 100,127,128,129,156 --repeats 2 --steps 20";
    }
    if (!args->data.empty()) command += " --data " + shell_quote(args->data);
    command += " --out " + shell_quote(out);
    std::cout << "b3 run: " << (gpu ? "GPU found" : "no GPU: a CPU-sized sweep") << "; running\n  "
              << command << "\n"
              << std::flush;
    const int status = std::system(command.c_str());
    if (status != 0)
      throw std::runtime_error("b3 run: the sweep failed (status " + std::to_string(status) + ")");
  });
}

}  // namespace b3::cli
