// decode_image_rgb: stb_image's header read, the bounds, then the decode,
// with stb_image compiled here (data/stb_image_build.h) and its allocations
// limited by what the image can need.
#include "data/image_decode.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "data/stb_image_build.h"
#include "tensor/printable_text.h"

namespace {

// The largest single allocation stb_image may make for the image being
// decoded, and whether it asked for more. Thread-local, because ImageFolder
// decodes on several threads; set only by DecoderAllocationLimit, for the
// duration of one call into stb_image.
thread_local size_t decoder_allocation_limit = 0;
thread_local bool decoder_allocation_refused = false;

class DecoderAllocationLimit {
 public:
  explicit DecoderAllocationLimit(size_t limit) {
    decoder_allocation_limit = limit;
    decoder_allocation_refused = false;
  }
  ~DecoderAllocationLimit() { decoder_allocation_limit = 0; }
  DecoderAllocationLimit(const DecoderAllocationLimit&) = delete;
  DecoderAllocationLimit& operator=(const DecoderAllocationLimit&) = delete;
  bool refused() const { return decoder_allocation_refused; }
};

bool within_limit(size_t bytes) {
  if (bytes <= decoder_allocation_limit) return true;
  decoder_allocation_refused = true;
  return false;
}

}  // namespace

void* b3_stbi_malloc(size_t bytes) { return within_limit(bytes) ? std::malloc(bytes) : nullptr; }

void* b3_stbi_realloc(void* block, size_t bytes) {
  return within_limit(bytes) ? std::realloc(block, bytes) : nullptr;
}

namespace b3 {

namespace {

// Reading a header needs little: stb's largest is its JPEG decoder state.
constexpr size_t kHeaderAllocationLimit = size_t{1} << 20;
// Decoding needs at most a few buffers of the image's size: 16-bit RGBA
// rows are 8 bytes a pixel; 16 a pixel and 16 MiB of working space is ample.
size_t decode_allocation_limit(int64_t width, int64_t height) {
  return static_cast<size_t>(16 * width * height) + (size_t{16} << 20);
}

[[noreturn]] void refuse(const std::string& source, const std::string& why) {
  throw std::runtime_error("ImageFolder: cannot decode image '" + source + "': " + why);
}

std::string stb_reason() {
  const char* reason = stbi_failure_reason();
  // stb_image's reasons can quote the file (a PNG chunk's four type bytes).
  return printable_text(reason != nullptr ? reason : "unknown error") +
         " (corrupt or not an image?)";
}

bool starts_with(const uint8_t* bytes, size_t size, const char* magic) {
  const size_t length = std::strlen(magic);
  return size >= length && std::memcmp(bytes, magic, length) == 0;
}

// stb_image decodes these by content; b3 does not claim them.
const char* foreign_format(const uint8_t* bytes, size_t size) {
  if (starts_with(bytes, size, "GIF8")) return "GIF";
  if (starts_with(bytes, size, "8BPS")) return "PSD";
  if (starts_with(bytes, size, "#?RADIANCE") || starts_with(bytes, size, "#?RGBE")) return "HDR";
  if (starts_with(bytes, size, "\x53\x80\xF6\x34")) return "PIC";
  return nullptr;
}

// The size a binary PPM/PGM (P6/P5) must have: its header (magic, width,
// height and maxval separated by whitespace and # comments, then one
// whitespace byte) and width x height x channels samples of 1 byte, or 2
// when maxval > 255 (stored in *maxval_out). 0 when the bytes are not such
// a file.
uint64_t netpbm_size_needed(const uint8_t* bytes, size_t size, uint64_t* maxval_out = nullptr) {
  if (size < 2 || bytes[0] != 'P' || (bytes[1] != '5' && bytes[1] != '6')) return 0;
  const uint64_t channels = bytes[1] == '6' ? 3 : 1;
  size_t at = 2;
  const auto is_space = [](uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r'); };
  const auto skip_space_and_comments = [&] {
    while (at < size && (is_space(bytes[at]) || bytes[at] == '#')) {
      if (bytes[at] == '#') {
        while (at < size && bytes[at] != '\n' && bytes[at] != '\r') ++at;
      } else {
        ++at;
      }
    }
  };
  const auto number = [&] {
    skip_space_and_comments();
    uint64_t value = 0;
    while (at < size && bytes[at] >= '0' && bytes[at] <= '9') {
      value = std::min<uint64_t>(value * 10 + (bytes[at++] - '0'), uint64_t{1} << 40);
    }
    return value;
  };
  const uint64_t width = number(), height = number(), maxval = number();
  if (maxval_out != nullptr) *maxval_out = maxval;
  ++at;  // the one whitespace byte before the samples
  if (width > static_cast<uint64_t>(kMaxImageSide) || height > static_cast<uint64_t>(kMaxImageSide))
    return 0;  // refused by the bounds anyway
  return at + width * height * channels * (maxval > 255 ? 2 : 1);
}

// The size an uncompressed, unmapped TGA (image type 2 or 3, 8/24/32 bits per
// pixel, as stb_image reads it with an unchecked copy) must have: the 18-byte
// header, the image id, the pixels. 0 for any other file.
uint64_t tga_size_needed(const uint8_t* bytes, size_t size) {
  if (size < 18) return 0;
  const uint8_t id_length = bytes[0], color_map_type = bytes[1], image_type = bytes[2];
  const uint8_t bits = bytes[16];
  if (color_map_type != 0 || (image_type != 2 && image_type != 3)) return 0;
  if (bits != 8 && bits != 24 && bits != 32) return 0;
  const uint64_t width = bytes[12] | (uint64_t{bytes[13]} << 8);
  const uint64_t height = bytes[14] | (uint64_t{bytes[15]} << 8);
  return 18 + uint64_t{id_length} + width * height * (bits / 8);
}

// stb_image 2.27 builds a JPEG Huffman table from its 16 code counts without
// checking that they sum to at most 256, and writes past its 257-entry
// arrays when they do (found by the fuzzer under UBSan; stb 2.28 checks it).
// True when any FF C4 (DHT) byte pair of a JPEG starts such a table, read as
// stb reads a DHT segment. Every position is tried, not only where a marker
// walk would find one, so that no reading of a corrupt file by stb can reach
// an unchecked table. (Entropy-coded data never holds FF C4; a segment that
// quotes one with such counts is refused as well: corrupt or hostile.)
bool jpeg_has_oversized_huffman_table(const uint8_t* bytes, size_t size) {
  size_t soi = 0;  // stb skips fill bytes (FF) before SOI too
  while (soi < size && bytes[soi] == 0xff) ++soi;
  if (soi == 0 || soi >= size || bytes[soi] != 0xd8) return false;
  const auto byte_at = [&](size_t at) -> size_t { return at < size ? bytes[at] : 0; };
  for (size_t at = 2; at + 1 < size; ++at) {
    if (bytes[at] != 0xff || bytes[at + 1] != 0xc4) continue;
    const size_t length = byte_at(at + 2) << 8 | byte_at(at + 3);
    size_t table = at + 4;
    for (int64_t left = static_cast<int64_t>(length) - 2; left > 0 && table < size;) {
      size_t codes = 0;
      for (size_t i = 1; i <= 16; ++i) codes += byte_at(table + i);
      if (codes > 256) return true;
      table += 17 + codes;
      left -= static_cast<int64_t>(17 + codes);
    }
  }
  return false;
}

}  // namespace

DecodedImage decode_image_rgb(const uint8_t* bytes, size_t size, const std::string& source) {
  if (size == 0) refuse(source, "the file is empty");
  // stb_image 2.27 reads a PPM/PGM header's numbers into an int without an
  // overflow check (UB, found by the fuzzer): a run of 9 or more digits in
  // the header is refused first.
  if (size >= 2 && bytes[0] == 'P' && (bytes[1] == '5' || bytes[1] == '6')) {
    size_t digits = 0, numbers = 0;  // the header: width, height, maxval
    for (size_t at = 2; at < size && numbers < 3; ++at) {
      const bool digit = bytes[at] >= '0' && bytes[at] <= '9';
      if (!digit && digits > 0) ++numbers;
      digits = digit ? digits + 1 : 0;
      if (digits >= 9) refuse(source, "its PPM/PGM header has a number of 9 or more digits");
    }
  }
  if (size > static_cast<size_t>(INT_MAX)) {
    refuse(source, "the file has " + std::to_string(size) + " bytes, more than stb_image reads");
  }
  if (const char* format = foreign_format(bytes, size)) {
    refuse(source,
           std::string("it is a ") + format + " file; b3 reads PNG, JPEG, BMP, PPM/PGM and TGA");
  }
  if (jpeg_has_oversized_huffman_table(bytes, size))
    refuse(source, "a JPEG Huffman table has more than 256 codes (corrupt or hostile)");
  const int length = static_cast<int>(size);
  int width = 0, height = 0, channels_in_file = 0;
  {
    const DecoderAllocationLimit limit(kHeaderAllocationLimit);
    if (stbi_info_from_memory(bytes, length, &width, &height, &channels_in_file) == 0)
      refuse(source, stb_reason());
  }
  if (width <= 0 || height <= 0 || width > kMaxImageSide || height > kMaxImageSide ||
      int64_t{width} * height > kMaxImagePixels) {
    refuse(source, "its header says " + std::to_string(width) + "x" + std::to_string(height) +
                       " pixels; b3 decodes at most " + std::to_string(kMaxImageSide) +
                       " per side and " + std::to_string(kMaxImagePixels) + " in all");
  }
  uint64_t maxval = 0;
  const uint64_t netpbm_needed = netpbm_size_needed(bytes, size, &maxval);
  const bool netpbm = netpbm_needed != 0;
  // stb_image 2.27 converts a 16-bit PPM/PGM's channels as if it were 8-bit
  // and then reads twice the buffer (found by the fuzzer under ASan).
  if (netpbm && maxval > 255) {
    refuse(source, "a 16-bit PPM/PGM (maxval " + std::to_string(maxval) +
                       "); b3 reads 8-bit ones (maxval at most 255)");
  }
  const uint64_t needed = netpbm ? netpbm_needed : tga_size_needed(bytes, size);
  if (needed > size) {
    refuse(source, std::string("the ") + (netpbm ? "PPM/PGM" : "TGA") + " file is truncated: " +
                       std::to_string(width) + "x" + std::to_string(height) + " pixels need " +
                       std::to_string(needed) + " bytes, it has " + std::to_string(size));
  }
  int decoded_width = 0, decoded_height = 0;
  const DecoderAllocationLimit limit(decode_allocation_limit(width, height));
  const std::unique_ptr<stbi_uc, void (*)(void*)> decoded(
      stbi_load_from_memory(bytes, length, &decoded_width, &decoded_height, &channels_in_file, 3),
      stbi_image_free);
  if (decoded == nullptr && limit.refused()) {
    refuse(source, "decoding it needs more memory than a " + std::to_string(width) + "x" +
                       std::to_string(height) + " image can (a corrupt or hostile file)");
  }
  if (decoded == nullptr) refuse(source, stb_reason());
  if (decoded_width != width || decoded_height != height) {
    refuse(source, "the header says " + std::to_string(width) + "x" + std::to_string(height) +
                       " pixels but " + std::to_string(decoded_width) + "x" +
                       std::to_string(decoded_height) + " were decoded");
  }
  DecodedImage image;
  image.shape = ImageShape{height, width, 3};
  image.pixels.assign(decoded.get(), decoded.get() + image.shape.bytes());
  return image;
}

}  // namespace b3
