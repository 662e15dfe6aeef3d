// A private temporary folder for one fuzz input, for the readers that take a
// path: made with mkdtemp under $TMPDIR (else /tmp), removed with everything
// in it when the ScratchDir goes, so the fuzzer leaves nothing behind.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace b3::fuzz {

class ScratchDir {
 public:
  ScratchDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/b3-fuzz-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr)
      throw std::runtime_error("fuzz: cannot make a folder like " + pattern);
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  // Writes `size` bytes as `name` inside the folder; returns its path.
  std::string write(const std::string& name, const uint8_t* data, size_t size) const {
    const std::string file = (path_ / name).string();
    std::FILE* out = std::fopen(file.c_str(), "wb");
    if (out == nullptr) throw std::runtime_error("fuzz: cannot write " + file);
    const bool written = size == 0 || std::fwrite(data, 1, size, out) == size;
    if (std::fclose(out) != 0 || !written) throw std::runtime_error("fuzz: cannot write " + file);
    return file;
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace b3::fuzz
