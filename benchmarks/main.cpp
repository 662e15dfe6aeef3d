// build/b3: the command line. Subcommands arrive with the issues that build
// them (train, sweep, info, parity, ...); until the benchmark lands, `run`
// says plainly that it is not there yet.
#include <cstring>
#include <exception>
#include <iostream>
#include <string>

#include "tensor/device.h"

namespace {

void print_usage(std::ostream& out) {
  out << "usage: b3 <command> [options]\n\n"
         "commands:\n"
         "  run       the batch-size benchmark (not yet: it lands with the benchmark issue)\n"
         "  version   build information (CUDA backend, devices)\n"
         "  help      this text\n";
}

int run_version() {
  std::cout << "b3 (CUDA backend: " << (b3::built_with_cuda() ? "built" : "not built")
            << ", CUDA devices: " << b3::cuda_device_count() << ")\n";
  return 0;
}

int run_benchmark() {
  std::cout << "b3 run: the batch-size benchmark is not implemented yet.\n"
               "It lands with the model, data and benchmark issues; today b3 has the tensor,\n"
               "autograd and layer foundation. `make test` checks it.\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 2 || !std::strcmp(argv[1], "help") || !std::strcmp(argv[1], "--help")) {
      print_usage(std::cout);
      return argc < 2 ? 2 : 0;
    }
    const std::string command = argv[1];
    if (command == "run") return run_benchmark();
    if (command == "version") return run_version();
    std::cerr << "b3: unknown command '" << command << "'\n\n";
    print_usage(std::cerr);
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "b3: error: " << e.what() << "\n";
    return 1;
  }
}
