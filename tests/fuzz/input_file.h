// A fuzz input written as a file, for the readers that take a path: inside a
// test::Scratch folder (tests/support/files.h: a fresh mkdtemp folder in the
// temp dir, removed with what is in it when the Scratch goes), so the fuzzer
// leaves nothing behind.
#pragma once

#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "tests/support/files.h"

namespace b3::fuzz {

// Writes `size` bytes as `name` inside `dir`; returns the file's path.
inline std::string write_input(const test::Scratch& dir, const std::string& name,
                               const uint8_t* data, size_t size) {
  const std::string file = dir / name;
  std::FILE* out = std::fopen(file.c_str(), "wb");
  if (out == nullptr) throw std::runtime_error("fuzz: cannot write " + file);
  const bool written = size == 0 || std::fwrite(data, 1, size, out) == size;
  if (std::fclose(out) != 0 || !written) throw std::runtime_error("fuzz: cannot write " + file);
  return file;
}

}  // namespace b3::fuzz
