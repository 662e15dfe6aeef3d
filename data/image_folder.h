// A folder of images, one subfolder per class, as torchvision's ImageFolder:
//
//   root/airplane/0001.png
//   root/automobile/0001.jpg ...
//
// Classes are the subfolders sorted by name (label = position); inside a class
// the files are found recursively and taken in sorted order. Images are PNG,
// JPEG, BMP or PPM/PGM, decoded with stb_image to 8-bit RGB (grayscale
// and alpha are converted, like torchvision's loader does with PIL's
// convert("RGB")). All images must have the same size.
//
// Differences from torchvision, all on the side of saying so: names starting
// with '.' are ignored (hidden files and folders); a file with another
// extension, an empty class folder, a file that does not decode, or an image
// of another size is an error naming the path, never a silent skip.
//
// Every image is decoded when the folder is opened (in parallel with OpenMP:
// 60,000 CIFAR-sized JPEGs take a few seconds), so get() is one memcpy and a
// bad file is reported before training starts.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace b3 {

struct ImageFolderOptions {
  // When set, an image of any other size is an error naming its file
  // (`b3 data convert` requires 32x32x3).
  std::optional<ImageShape> required_shape;
};

// True for the file extensions ImageFolder decodes (case-insensitive).
bool is_supported_image_file(const std::string& path);

class ImageFolder : public Dataset {
 public:
  static std::shared_ptr<ImageFolder> open(const std::string& root,
                                           const ImageFolderOptions& options = {});

  int64_t size() const override { return static_cast<int64_t>(labels_.size()); }
  ImageShape image_shape() const override { return shape_; }
  std::vector<std::string> class_names() const override { return class_names_; }
  int64_t get(int64_t index, uint8_t* pixels) const override;
  int64_t label(int64_t index) const override;

  const std::string& root() const { return root_; }
  const std::string& path(int64_t index) const;  // the file example `index` came from

 private:
  std::string root_;
  ImageShape shape_;
  std::vector<std::string> class_names_;
  std::vector<std::string> paths_;
  std::vector<int64_t> labels_;
  std::vector<uint8_t> pixels_;  // size() images, HWC
};

}  // namespace b3
