// Helpers for the data tests (tests/test_data_*.cpp): a temporary directory
// under the build tree, small files written byte by byte, tiny CIFAR-10
// batch files, images written with stb_image_write, and running build/b3.
// Every test makes its own data here; nothing is written into the sources.
#pragma once

#include <doctest/doctest.h>
#include <stb/stb_image_write.h>
#include <sys/wait.h>

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensor/random.h"

namespace b3::test {

// doctest::Contains for a std::string built at run time (paths).
inline doctest::Contains contains(const std::string& text) {
  return doctest::Contains(doctest::String(text.c_str()));
}

// A fresh directory, removed with everything in it when the object goes away.
// It lives under $B3_BUILD_DIR/test-data (set by CTest) or the system temp dir.
class TempDir {
 public:
  TempDir() {
    const char* build = std::getenv("B3_BUILD_DIR");
    std::filesystem::path base = build != nullptr && *build != '\0'
                                     ? std::filesystem::path(build) / "test-data"
                                     : std::filesystem::temp_directory_path();
    std::filesystem::create_directories(base);
    std::string pattern = (base / "b3-data-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr)
      throw std::runtime_error("mkdtemp failed in " + base.string());
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// `count` random 32x32x3 HWC images, one after another.
inline std::vector<uint8_t> random_images(int64_t count, uint64_t seed, int64_t bytes = 3072) {
  Generator gen(seed);
  std::vector<uint8_t> pixels(static_cast<size_t>(count * bytes));
  for (uint8_t& p : pixels) p = static_cast<uint8_t>(gen.below(256));
  return pixels;
}

// CIFAR-10 records (label byte, then R, G, B planes) for HWC images and labels.
inline std::vector<uint8_t> cifar_records(const std::vector<uint8_t>& hwc_images,
                                          const std::vector<int>& labels) {
  std::vector<uint8_t> bytes;
  for (size_t i = 0; i < labels.size(); ++i) {
    bytes.push_back(static_cast<uint8_t>(labels[i]));
    const uint8_t* image = hwc_images.data() + i * 3072;
    for (int c = 0; c < 3; ++c) {
      for (int p = 0; p < 1024; ++p) bytes.push_back(image[p * 3 + c]);
    }
  }
  return bytes;
}

// Writes an RGB image as PNG, BMP or JPEG (by extension) with stb_image_write.
inline void write_image(const std::string& path, int width, int height,
                        const std::vector<uint8_t>& rgb, int jpeg_quality = 95) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::string ext = std::filesystem::path(path).extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  int ok = 0;
  if (ext == ".png")
    ok = stbi_write_png(path.c_str(), width, height, 3, rgb.data(), width * 3);
  else if (ext == ".bmp")
    ok = stbi_write_bmp(path.c_str(), width, height, 3, rgb.data());
  else if (ext == ".jpg" || ext == ".jpeg")
    ok = stbi_write_jpg(path.c_str(), width, height, 3, rgb.data(), jpeg_quality);
  if (!ok) throw std::runtime_error("cannot write image " + path);
}

// Runs build/b3 with `args`; returns its exit status, and its stdout+stderr in `output`.
inline int run_b3(const std::string& args, std::string& output, const TempDir& scratch) {
  // $B3_BUILD_DIR (set by CTest), else the folder of this test executable:
  // both are where CMake puts build/b3.
  const char* build = std::getenv("B3_BUILD_DIR");
  const std::filesystem::path dir =
      build != nullptr && *build != '\0'
          ? std::filesystem::path(build)
          : std::filesystem::read_symlink("/proc/self/exe").parent_path();
  const std::string b3 = (dir / "b3").string();
  if (!std::filesystem::exists(b3)) {
    throw std::runtime_error(b3 + " does not exist: build the b3 target first (make test does)");
  }
  const std::string log = scratch / "b3-output.txt";
  const int status = std::system((b3 + " " + args + " >" + log + " 2>&1").c_str());
  output = read_text(log);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

}  // namespace b3::test
