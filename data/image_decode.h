// Decoding one image file's bytes (PNG, JPEG, BMP, PPM/PGM, known by their
// first bytes) to 8-bit RGB with stb_image, bounded before anything is
// decoded: the header is read first (stbi_info_from_memory) and an image
// wider or taller than kMaxImageSide, or of more than kMaxImagePixels, is
// refused, so a file of a few bytes that claims to be 60,000 x 60,000 never
// allocates 10 GB. Grayscale and alpha become RGB, as torchvision's loader
// does with PIL's convert("RGB").
//
// Gaps of stb_image 2.27 (Debian 12's) are closed here, most found by the
// fuzzer (tests/fuzz/fuzz_image_decode.cpp): it decodes a truncated PPM/PGM,
// BMP or JPEG without an error, the missing pixels uninitialized or zeros,
// so each file's size is checked against what its header claims; it
// overflows on 16-bit PPM/PGM, on PPM/PGM header numbers of 9 digits and on
// JPEG Huffman tables of over 256 codes, which are refused first; a small
// PNG can make its inflate allocate gigabytes, so its allocations are
// limited by the image's size (data/stb_image_build.h). GIF, PSD, HDR and
// PIC, which stb reads by content, and TGA, which has no signature, are
// refused.
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
