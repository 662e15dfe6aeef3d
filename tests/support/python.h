// Tests that compare with PyTorch run Debian's python3 (python3-torch,
// python3-torchvision). Where torch is missing, such a test prints why and
// exits with kSkipExitCode, which CTest reports as "Skipped" (never "Passed").
#pragma once

#include <string>

namespace b3::test {

inline constexpr int kSkipExitCode = 77;

// The interpreter: $B3_PYTHON, else /usr/bin/python3 (Debian's, which has torch).
std::string python_executable();

// Exits the test process with kSkipExitCode, printing `reason`, unless
// `python -c "import torch, torchvision"` works.
void skip_unless_torch_available();

// Runs a shell command; returns its exit status; throws if it cannot start.
int run_command(const std::string& command);

}  // namespace b3::test
