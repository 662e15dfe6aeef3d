// What the fuzz targets check beyond "no crash": a reader that accepts an
// input keeps its promises about the result, and one that refuses it says so
// in a message that echoes no raw binary from the input (DESIGN.md), so a
// hostile file cannot put control bytes or invalid UTF-8 on a terminal or in
// a log. A broken promise aborts, which libFuzzer reports as a crash and
// saves the input for.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "tensor/printable_text.h"

namespace b3::fuzz {

[[noreturn]] inline void broken_promise(const char* what) {
  std::fprintf(stderr, "fuzz: broken promise: %s\n", what);
  std::abort();
}

// A refusal: its message must print as it is (tensor/printable_text.h).
inline void check_refusal(const std::exception& error) {
  if (printable_text(error.what()) != error.what()) {
    std::fprintf(stderr, "fuzz: the refusal's message echoes raw bytes: %s\n",
                 printable_text(error.what()).c_str());
    std::abort();
  }
}

}  // namespace b3::fuzz
