// read_file_bytes: one read of the file's size, then whatever follows.
#include "tensor/file_bytes.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace b3 {

std::vector<uint8_t> read_file_bytes(const std::string& path, const std::string& what) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    throw std::runtime_error(what + ": cannot read '" + path + "': " + std::strerror(errno));
  }
  // Read in one go into a buffer of the file's size (then whatever follows,
  // should the file grow meanwhile or the size be unknown).
  std::vector<uint8_t> bytes;
  std::error_code size_error;
  const auto expected = std::filesystem::file_size(path, size_error);
  if (!size_error) bytes.resize(static_cast<size_t>(expected));
  const size_t filled = bytes.empty() ? 0 : std::fread(bytes.data(), 1, bytes.size(), file);
  bytes.resize(filled);
  uint8_t chunk[1 << 16];
  size_t got = 0;
  while ((got = std::fread(chunk, 1, sizeof chunk, file)) > 0) {
    bytes.insert(bytes.end(), chunk, chunk + got);
  }
  const bool failed = std::ferror(file) != 0;
  std::fclose(file);
  if (failed) throw std::runtime_error(what + ": error while reading '" + path + "'");
  return bytes;
}

}  // namespace b3
