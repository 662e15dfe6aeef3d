// Whole-file reads and all-or-nothing writes, with errors that name the file.
#include "data/files.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace b3 {

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
