// The main job (`b3 run`, what `make run` runs): `b3 sweep` with the seed
// experiment's settings for the machine at hand, as a command line that is
// printed before it starts, so that anyone can rerun or vary it:
//   CPU: MobileNetV3-Large at 32x32, batch sizes 100,127,128,129,156, 2 repeats
//        of 20 steps each (minutes, not hours; a CPU cannot do 224x224 epochs);
//   GPU: 224x224, the seed's batch sizes 100,127,128,129,156,511,512,513,
//        3 repeats of 1 epoch each, mixed precision (f16 autocast, loss scaling).
// Data: --data as everywhere (default: data/cifar-10-batches-bin, else a
// download, else synthetic data with a loud notice).
#pragma once

#include <string>

namespace b3::experiment {

// The shell command: `executable` sweep with the settings for a GPU or a CPU
// machine, --data when `data` is not empty, and --out `out`.
std::string standard_sweep_command(const std::string& executable, bool gpu, const std::string& data,
                                   const std::string& out);

// results/run-<local date and time>, e.g. results/run-20260131-120000.
std::string default_run_directory();

// The running executable's path (/proc/self/exe); throws std::runtime_error
// when it cannot be read.
std::string self_executable();

// `text` in single quotes for a POSIX shell.
std::string shell_quote(const std::string& text);

}  // namespace b3::experiment
