// Files for tests that write them: a fresh scratch folder under
// $B3_BUILD_DIR/test-data (CTest sets B3_BUILD_DIR) or the temp dir, removed
// with everything in it when the test ends, and a file read back as text.
#pragma once

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace b3::test {

class Scratch {
 public:
  // The folder is named <prefix>-XXXXXX (mkdtemp's unique suffix).
  explicit Scratch(const std::string& prefix = "b3-test") {
    const char* build = std::getenv("B3_BUILD_DIR");
    const std::filesystem::path base = build != nullptr && *build != '\0'
                                           ? std::filesystem::path(build) / "test-data"
                                           : std::filesystem::temp_directory_path();
    std::filesystem::create_directories(base);
    std::string pattern = (base / (prefix + "-XXXXXX")).string();
    if (mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("Scratch: mkdtemp failed in " + pattern);
    }
    path = pattern;
  }
  ~Scratch() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  // A path inside the folder, as a string (for command lines).
  std::string operator/(const std::string& name) const { return (path / name).string(); }

  std::filesystem::path path;
};

// The whole file, or "" when it cannot be read.
inline std::string read_text(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace b3::test
