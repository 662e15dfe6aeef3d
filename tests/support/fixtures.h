// PyTorch reference fixtures for the parity tests, made on demand.
//
// fixture_dir() runs tests/reference/make_fixtures.py once per build folder,
// into $B3_BUILD_DIR/fixtures (CTest sets B3_BUILD_DIR for every test; a test
// run by hand falls back to <temp>/b3-fixtures-<uid>). When they must be
// made and python3 cannot import torch and torchvision, it skips the test
// (exit 77, "Skipped" in CTest) with a printed reason; current fixtures are
// used without starting Python.
//
// Safe when `ctest -j` starts many parity tests at once: one process
// generates while the others wait on a lock file; the script writes into a
// temporary folder that is renamed into place only when complete, so no test
// ever reads a half-written fixture. The folder holds a STAMP with the format
// version and a hash of the script: editing the script regenerates the
// fixtures, an unchanged script reuses them.
//
// Header-only (inline), so the test-support library needs no new source file.
#pragma once

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensor/safetensors.h"
#include "tests/support/python.h"

namespace b3::test {

// Must equal FORMAT_VERSION in tests/reference/make_fixtures.py; every fixture
// file's __metadata__["format_version"] is checked against it.
inline constexpr int kFixtureFormatVersion = 1;

namespace fixture_detail {

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The repository root, from this header's own path (.../tests/support/fixtures.h).
inline std::filesystem::path source_root() {
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
}

inline std::filesystem::path script_path() {
  return source_root() / "tests" / "reference" / "make_fixtures.py";
}

// FNV-1a, 64 bits: enough to notice that the script changed.
inline uint64_t fnv1a(const std::string& bytes) {
  uint64_t hash = 1469598103934665603ull;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

inline std::string expected_stamp() {
  const std::filesystem::path script = script_path();
  if (!std::filesystem::exists(script)) {
    throw std::runtime_error("fixtures: cannot find " + script.string());
  }
  std::ostringstream stamp;
  stamp << "format_version=" << kFixtureFormatVersion << " script_fnv1a=" << std::hex
        << fnv1a(read_text(script)) << "\n";
  return stamp.str();
}

inline std::filesystem::path fixtures_root() {
  const char* build = std::getenv("B3_BUILD_DIR");
  if (build != nullptr && *build != '\0') return std::filesystem::path(build) / "fixtures";
  return std::filesystem::temp_directory_path() / ("b3-fixtures-" + std::to_string(::getuid()));
}

inline bool is_current(const std::filesystem::path& dir, const std::string& stamp) {
  return std::filesystem::exists(dir / "STAMP") && read_text(dir / "STAMP") == stamp;
}

// Holds an exclusive flock on `path` for its lifetime.
class FileLock {
 public:
  explicit FileLock(const std::filesystem::path& path)
      : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)) {
    if (fd_ < 0) throw std::runtime_error("fixtures: cannot open lock file " + path.string());
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno != EINTR) throw std::runtime_error("fixtures: cannot lock " + path.string());
    }
  }
  ~FileLock() {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_;
};

inline std::filesystem::path prepare() {
  namespace fs = std::filesystem;
  const fs::path dir = fixtures_root();
  const std::string stamp = expected_stamp();
  // Current fixtures need no Python (starting it to import torch costs ~1.5 s per test).
  if (is_current(dir, stamp)) return dir;
  skip_unless_torch_available();

  fs::create_directories(dir.parent_path());
  FileLock lock(dir.string() + ".lock");
  if (is_current(dir, stamp)) return dir;  // another test made them while we waited

  // Holding the lock, no other process is generating: any temporary or stale
  // folder left next to ours comes from a run that was killed. Remove them.
  const std::string base = dir.filename().string();
  for (const fs::directory_entry& entry : fs::directory_iterator(dir.parent_path())) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(base + ".tmp.", 0) == 0 || name.rfind(base + ".stale.", 0) == 0) {
      fs::remove_all(entry.path());
    }
  }
  const std::string pid = std::to_string(::getpid());
  const fs::path tmp = dir.string() + ".tmp." + pid;
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  const fs::path log = tmp / "make_fixtures.log";
  std::cout << "fixtures: generating PyTorch references into " << dir.string()
            << " (once per build folder; about a minute)" << std::endl;
  const std::string command = python_executable() + " '" + script_path().string() + "' '" +
                              tmp.string() + "' >'" + log.string() + "' 2>&1";
  const int status = run_command(command);
  if (status != 0) {
    const std::string output = read_text(log);
    fs::remove_all(tmp);
    throw std::runtime_error("fixtures: " + script_path().string() + " failed with exit status " +
                             std::to_string(status) + ":\n" + output);
  }
  std::ofstream(tmp / "STAMP") << stamp;
  // Swap the new folder in: move a stale one aside first (rename is atomic),
  // then rename the new one into place, then delete the stale one.
  const fs::path stale = dir.string() + ".stale." + pid;
  if (fs::exists(dir)) fs::rename(dir, stale);
  fs::rename(tmp, dir);
  fs::remove_all(stale);
  return dir;
}

}  // namespace fixture_detail

// The folder holding the current fixtures (generated on first use in this
// build folder); skips the test when PyTorch is not available.
inline std::filesystem::path fixture_dir() {
  static const std::filesystem::path dir = fixture_detail::prepare();
  return dir;
}

// One fixture file, checked to be of kFixtureFormatVersion.
inline SafetensorsFile load_fixture(const std::string& file_name) {
  const std::filesystem::path path = fixture_dir() / file_name;
  SafetensorsFile file = load_safetensors(path.string());
  const auto version = file.metadata.find("format_version");
  if (version == file.metadata.end() || version->second != std::to_string(kFixtureFormatVersion)) {
    throw std::runtime_error("fixtures: " + path.string() + " has format_version " +
                             (version == file.metadata.end() ? "(none)" : version->second) +
                             ", the tests expect " + std::to_string(kFixtureFormatVersion) +
                             " (bump FORMAT_VERSION and kFixtureFormatVersion together)");
  }
  return file;
}

// The parity measure: ||actual - reference|| / max(||reference||, floor * sqrt(n)),
// norms over all elements in double. The floor (an absolute error of about
// `floor_per_element` per element) matters only where the reference is
// (nearly) zero, e.g. gradients that vanish in exact arithmetic.
inline double relative_error(const Tensor& actual, const Tensor& reference,
                             double floor_per_element = 1e-5) {
  if (actual.shape() != reference.shape()) {
    throw std::invalid_argument("relative_error: shapes " + shape_str(actual.shape()) + " and " +
                                shape_str(reference.shape()));
  }
  const std::vector<double> a = actual.to_doubles();
  const std::vector<double> r = reference.to_doubles();
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (a[i] - r[i]) * (a[i] - r[i]);
    norm += r[i] * r[i];
  }
  const double floor = floor_per_element * std::sqrt(static_cast<double>(a.size()));
  const double error = std::sqrt(diff) / std::max(std::sqrt(norm), floor);
  return std::isnan(error) ? INFINITY : error;
}

}  // namespace b3::test
