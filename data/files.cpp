// Whole-file reads and all-or-nothing writes, with errors that name the file.
#include "data/files.h"

#include <cerrno>
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

AtomicFileWriter::AtomicFileWriter(std::string path, std::string what)
    : path_(std::move(path)), partial_path_(path_ + ".partial"), what_(std::move(what)) {
  file_ = std::fopen(partial_path_.c_str(), "wb");
  if (file_ == nullptr) {
    throw std::runtime_error(what_ + ": cannot write '" + partial_path_ +
                             "': " + std::strerror(errno));
  }
}

AtomicFileWriter::~AtomicFileWriter() {
  if (file_ != nullptr) {
    std::fclose(file_);
    std::error_code ignored;
    std::filesystem::remove(partial_path_, ignored);
  }
}

void AtomicFileWriter::write(const void* data, size_t nbytes) {
  if (file_ == nullptr) throw std::logic_error(what_ + ": write after commit to '" + path_ + "'");
  if (std::fwrite(data, 1, nbytes, file_) != nbytes) {
    throw std::runtime_error(what_ + ": cannot write '" + partial_path_ +
                             "': " + std::strerror(errno));
  }
}

void AtomicFileWriter::commit() {
  if (file_ == nullptr) return;
  const bool failed = std::fflush(file_) != 0;
  std::fclose(file_);
  file_ = nullptr;
  std::error_code error;
  if (!failed) std::filesystem::rename(partial_path_, path_, error);
  if (failed || error) {
    std::filesystem::remove(partial_path_, error);
    throw std::runtime_error(what_ + ": cannot finish writing '" + path_ + "'");
  }
}

}  // namespace b3
