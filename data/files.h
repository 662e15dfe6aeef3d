// File helpers for the data pipeline: read a whole file with an error that
// names it (tensor/file_bytes.h), and write a file so that it appears complete or not at all
// (written under a temporary name, renamed on commit, removed on failure).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "tensor/file_bytes.h"  // read_file_bytes, for the data readers

namespace b3 {

// Writes `path` atomically: bytes go to "<path>.partial"; commit() flushes and
// renames it to `path`. Destroyed without commit(), the partial file is removed.
class AtomicFileWriter {
 public:
  AtomicFileWriter(std::string path, std::string what);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t nbytes);
  void commit();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string partial_path_;
  std::string what_;
  std::FILE* file_ = nullptr;
};

}  // namespace b3
