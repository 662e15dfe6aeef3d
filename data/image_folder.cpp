// ImageFolder: finding class folders and image files, decoding them with
// data/image_decode.h.
#include "data/image_folder.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <utility>

#include "data/files.h"
#include "data/image_decode.h"

namespace fs = std::filesystem;

namespace b3 {

namespace {

constexpr const char* kSupported = ".png, .jpg, .jpeg, .bmp, .ppm, .pgm";
// Refuse to decode more than this into memory (eager decoding is meant for
// CIFAR-sized data sets: 60,000 x 32x32x3 is 184 MB).
constexpr int64_t kMaxDecodedBytes = int64_t{16} << 30;

bool is_hidden(const fs::path& path) {
  const std::string name = path.filename().string();
  return !name.empty() && name[0] == '.';
}

// Image files of one class folder, recursively, as torchvision orders them:
// folders sorted by path, files sorted by name inside each folder.
std::vector<std::string> list_class_files(const fs::path& class_dir) {
  std::vector<std::pair<std::string, std::string>> found;  // (folder, file name)
  std::vector<fs::path> pending{class_dir};
  while (!pending.empty()) {
    const fs::path dir = pending.back();
    pending.pop_back();
    for (const fs::directory_entry& entry : fs::directory_iterator(dir)) {
      if (is_hidden(entry.path())) continue;
      if (entry.is_directory()) {
        pending.push_back(entry.path());
      } else if (!is_supported_image_file(entry.path().string())) {
        throw std::runtime_error("ImageFolder: '" + entry.path().string() +
                                 "' is not an image file (supported: " + kSupported +
                                 "); move it out of the class folder");
      } else {
        found.emplace_back(dir.string(), entry.path().filename().string());
      }
    }
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> paths;
  for (const auto& [dir, name] : found) paths.push_back((fs::path(dir) / name).string());
  return paths;
}

// Decodes one file to 8-bit RGB. Returns an empty vector and sets `error` on failure.
std::vector<uint8_t> decode_rgb(const std::string& path, ImageShape& shape, std::string& error) {
  try {
    const std::vector<uint8_t> bytes = read_file_bytes(path, "ImageFolder");
    DecodedImage image = decode_image_rgb(bytes.data(), bytes.size(), path);
    shape = image.shape;
    return std::move(image.pixels);
  } catch (const std::exception& e) {
    error = e.what();
    return {};
  }
}

}  // namespace

bool is_supported_image_file(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp" || ext == ".ppm" ||
         ext == ".pgm";
}

std::shared_ptr<ImageFolder> ImageFolder::open(const std::string& root,
                                               const ImageFolderOptions& options) {
  std::error_code error;
  if (!fs::is_directory(root, error)) {
    throw std::runtime_error("ImageFolder: directory '" + root + "' does not exist");
  }
  auto folder = std::shared_ptr<ImageFolder>(new ImageFolder());
  folder->root_ = root;
  std::vector<fs::path> class_dirs;
  for (const fs::directory_entry& entry : fs::directory_iterator(root)) {
    if (entry.is_directory() && !is_hidden(entry.path())) class_dirs.push_back(entry.path());
  }
  std::sort(class_dirs.begin(), class_dirs.end(),
            [](const fs::path& a, const fs::path& b) { return a.filename() < b.filename(); });
  if (class_dirs.empty()) {
    throw std::runtime_error("ImageFolder: '" + root +
                             "' has no class folders (expected root/<class>/<image files>)");
  }
  for (size_t c = 0; c < class_dirs.size(); ++c) {
    const std::vector<std::string> files = list_class_files(class_dirs[c]);
    if (files.empty()) {
      throw std::runtime_error("ImageFolder: class folder '" + class_dirs[c].string() +
                               "' holds no image files (supported: " + kSupported + ")");
    }
    folder->class_names_.push_back(class_dirs[c].filename().string());
    for (const std::string& path : files) {
      folder->paths_.push_back(path);
      folder->labels_.push_back(static_cast<int64_t>(c));
    }
  }

  // The first image fixes the size; the others are decoded in parallel into place.
  const int64_t n = folder->size();
  std::string first_error;
  std::vector<uint8_t> first = decode_rgb(folder->paths_[0], folder->shape_, first_error);
  if (!first_error.empty()) throw std::runtime_error(first_error);
  const ImageShape shape = folder->shape_;
  auto wrong_size = [&](const std::string& path, const ImageShape& actual,
                        const ImageShape& expected, const char* why) {
    return "ImageFolder: image '" + path + "' is " + actual.str() + " (height x width x channels)" +
           ", but " + why + " " + expected.str();
  };
  if (options.required_shape && !(shape == *options.required_shape)) {
    throw std::runtime_error(
        wrong_size(folder->paths_[0], shape, *options.required_shape, "this needs"));
  }
  if (n * shape.bytes() > kMaxDecodedBytes) {
    throw std::runtime_error("ImageFolder: '" + root + "' holds " + std::to_string(n) +
                             " images of " + shape.str() +
                             ", too many to decode into memory at once");
  }
  folder->pixels_.resize(static_cast<size_t>(n * shape.bytes()));
  std::copy(first.begin(), first.end(), folder->pixels_.begin());
  std::vector<std::string> errors(static_cast<size_t>(n));
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t i = 1; i < n; ++i) {
    const std::string& path = folder->paths_[static_cast<size_t>(i)];
    std::string& failure = errors[static_cast<size_t>(i)];
    ImageShape actual;
    const std::vector<uint8_t> pixels = decode_rgb(path, actual, failure);
    if (!failure.empty()) continue;
    if (!(actual == shape)) {
      failure = wrong_size(path, actual, shape,
                           options.required_shape ? "this needs" : "the first image is");
      continue;
    }
    std::copy(pixels.begin(), pixels.end(), folder->pixels_.begin() + i * shape.bytes());
  }
  for (const std::string& failure : errors) {
    if (!failure.empty()) throw std::runtime_error(failure);
  }
  return folder;
}

int64_t ImageFolder::get(int64_t index, uint8_t* pixels) const {
  check_index("ImageFolder::get", index, size());
  std::memcpy(pixels, pixels_.data() + index * shape_.bytes(), static_cast<size_t>(shape_.bytes()));
  return labels_[static_cast<size_t>(index)];
}

int64_t ImageFolder::label(int64_t index) const {
  check_index("ImageFolder::label", index, size());
  return labels_[static_cast<size_t>(index)];
}

const std::string& ImageFolder::path(int64_t index) const {
  check_index("ImageFolder::path", index, size());
  return paths_[static_cast<size_t>(index)];
}

}  // namespace b3
