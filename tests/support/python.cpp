// Finding Debian's python3 with torch, and skipping cleanly when it is absent.
#include "tests/support/python.h"

#include <sys/wait.h>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <stdexcept>

namespace b3::test {

std::string python_executable() {
  const char* configured = std::getenv("B3_PYTHON");
  return configured != nullptr && *configured != '\0' ? configured : "/usr/bin/python3";
}

int run_command(const std::string& command) {
  const int status = std::system(command.c_str());
  if (status == -1) throw std::runtime_error("could not run: " + command);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

void skip_unless_torch_available() {
  const std::string python = python_executable();
  if (run_command(python + " -c 'import torch, torchvision' >/dev/null 2>&1") != 0) {
    std::cout << "SKIPPED: " << python
              << " cannot import torch and torchvision (install python3-torch and "
                 "python3-torchvision, or set B3_PYTHON)"
              << std::endl;
    std::exit(kSkipExitCode);
  }
}

}  // namespace b3::test
