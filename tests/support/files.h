// Files for tests that write them: a fresh scratch folder under
// $B3_BUILD_DIR/test-data (CTest sets B3_BUILD_DIR) or the temp dir, removed
// with everything in it when the test ends; a file read back as text, its
// non-empty lines, and a CSV line's fields.
#pragma once

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

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

// The non-empty lines of `text`.
inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(line);
  return lines;
}

// The comma-separated fields of one CSV line (no quoting); a trailing comma
// ends with an empty field.
inline std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> fields;
  std::string field;
  std::istringstream in(line);
  while (std::getline(in, field, ',')) fields.push_back(field);
  if (!line.empty() && line.back() == ',') fields.push_back("");
  return fields;
}

}  // namespace b3::test
