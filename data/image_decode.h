// Decoding one image file's bytes (PNG, JPEG, BMP, PPM/PGM, TGA) to 8-bit RGB
// with stb_image, bounded before anything is decoded: the header is read
// first (stbi_info_from_memory) and an image wider or taller than
// kMaxImageSide, or of more than kMaxImagePixels, is refused, so a file of a
// few bytes that claims to be 60,000 x 60,000 never allocates 10 GB.
// Grayscale and alpha become RGB, as torchvision's loader does with PIL's
// convert("RGB").
//
// Gaps of stb_image 2.27 (Debian 12's) are closed here: it decodes a
// truncated binary PPM/PGM or uncompressed TGA without an error, leaving the
// missing pixels as uninitialized memory, so those files' sizes are checked
// against their headers; a small PNG can make its inflate allocate
// gigabytes, so its allocations are limited by the image's size
// (data/stb_image_build.h); and it decodes GIF, PSD, HDR and PIC too (by
// content, whatever the file's name), which b3 does not build in and names.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace b3 {

inline constexpr int64_t kMaxImageSide = 16384;
inline constexpr int64_t kMaxImagePixels = int64_t{1} << 26;  // 8192 x 8192; 192 MiB as RGB

struct DecodedImage {
  ImageShape shape;             // height x width x 3
  std::vector<uint8_t> pixels;  // HWC, shape.bytes() of them
};

// Throws std::runtime_error "ImageFolder: cannot decode image '<source>': <why>"
// for an empty, truncated, corrupt or unsupported file, and for one beyond
// the bounds above.
DecodedImage decode_image_rgb(const uint8_t* bytes, size_t size, const std::string& source);

}  // namespace b3
