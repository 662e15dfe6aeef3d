// decode_image_rgb: stb_image's header read, the bounds, then the decode,
// with stb_image compiled here (data/stb_image_build.h) and its allocations
// limited by what the image can need.
#include "data/image_decode.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
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

// Zero-filled: stb_image 2.27 lets a JPEG scan use a Huffman table that no
// DHT segment defined, and then reads that table's memory as it was
// allocated (found by the fuzzer under UBSan: an index of -134,216,635).
// An all-zero table decodes every code as symbol 0 of length 0, in bounds,
// and the same on every run.
void* b3_stbi_malloc(size_t bytes) { return within_limit(bytes) ? std::calloc(1, bytes) : nullptr; }

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

// The formats b3 decodes, known by their first bytes. TGA, which stb_image
// also reads, is not among them: it has no signature, so any bytes that are
// nothing else parse as one, and stb decodes a truncated RLE TGA of a few
// bytes as a full-size image of zeros (the fuzzer spent 13 s on one of 91).
enum class ImageFormat { png, jpeg, bmp, netpbm };

constexpr const char* kFormatsRead = "PNG, JPEG, BMP and PPM/PGM";

bool starts_with(const uint8_t* bytes, size_t size, const char* magic, size_t length) {
  return size >= length && std::memcmp(bytes, magic, length) == 0;
}

// Where a JPEG's SOI marker is (stb skips FF fill bytes before it), or 0.
size_t jpeg_soi_at(const uint8_t* bytes, size_t size) {
  size_t at = 0;
  while (at < size && bytes[at] == 0xff) ++at;
  return at > 0 && at < size && bytes[at] == 0xd8 ? at : 0;
}

std::optional<ImageFormat> format_of(const uint8_t* bytes, size_t size) {
  if (starts_with(bytes, size, "\x89PNG\r\n\x1a\n", 8)) return ImageFormat::png;
  if (jpeg_soi_at(bytes, size) != 0) return ImageFormat::jpeg;
  if (starts_with(bytes, size, "BM", 2)) return ImageFormat::bmp;
  if (starts_with(bytes, size, "P5", 2) || starts_with(bytes, size, "P6", 2))
    return ImageFormat::netpbm;
  return std::nullopt;
}

// Formats worth naming when refused (stb_image reads the first four by
// content, which b3 does not build in).
const char* foreign_format(const uint8_t* bytes, size_t size) {
  if (starts_with(bytes, size, "GIF8", 4)) return "GIF";
  if (starts_with(bytes, size, "8BPS", 4)) return "PSD";
  if (starts_with(bytes, size, "#?RADIANCE", 10) || starts_with(bytes, size, "#?RGBE", 6))
    return "HDR";
  if (starts_with(bytes, size, "\x53\x80\xF6\x34", 4)) return "PIC";
  if (starts_with(bytes, size, "II*\0", 4) || starts_with(bytes, size, "MM\0*", 4)) return "TIFF";
  if (size >= 12 && starts_with(bytes, size, "RIFF", 4) && std::memcmp(bytes + 8, "WEBP", 4) == 0)
    return "WebP";
  return nullptr;
}

// A binary PPM/PGM's (P6/P5) header, read as stb_image reads it: the magic,
// then width, height and maxval, each after whitespace and # comments (to
// the end of the line), then one whitespace byte before the samples.
struct NetpbmHeader {
  uint64_t width = 0, height = 0, maxval = 0;  // each capped at 2^40
  size_t samples_at = 0;                       // where the samples start
  size_t longest_number = 0;                   // digits of the longest of the three
};

NetpbmHeader read_netpbm_header(const uint8_t* bytes, size_t size) {
  NetpbmHeader header;
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
    const size_t start = at;
    while (at < size && bytes[at] >= '0' && bytes[at] <= '9') {
      value = std::min<uint64_t>(value * 10 + (bytes[at++] - '0'), uint64_t{1} << 40);
    }
    header.longest_number = std::max(header.longest_number, at - start);
    return value;
  };
  header.width = number();
  header.height = number();
  header.maxval = number();
  header.samples_at = at + 1;
  return header;
}

// The size a binary PPM/PGM must have: its header and width x height x
// channels samples of 1 byte, or 2 when maxval > 255. 0 when the sizes are
// beyond the bounds (refused by them anyway).
uint64_t netpbm_size_needed(const uint8_t* bytes, const NetpbmHeader& header) {
  const uint64_t channels = bytes[1] == '6' ? 3 : 1;
  if (header.width > static_cast<uint64_t>(kMaxImageSide) ||
      header.height > static_cast<uint64_t>(kMaxImageSide))
    return 0;
  return header.samples_at +
         header.width * header.height * channels * (header.maxval > 255 ? 2 : 1);
}

uint32_t little_endian(const uint8_t* bytes, size_t at, size_t count) {
  uint32_t value = 0;
  for (size_t i = 0; i < count; ++i) value |= uint32_t{bytes[at + i]} << (8 * i);
  return value;
}

// The size an uncompressed BMP (compression 0 or 3, as stb_image reads
// them: its rows are read byte by byte, and a missing byte reads as 0, so a
// truncated file decodes to zeros without an error) must have: its pixel
// data's offset, then |height| rows of width x bits, each padded to 4
// bytes. 0 for headers stb refuses by itself and for sizes beyond the
// bounds. *bad_height is set for a height of -2^31, whose magnitude stb
// takes with abs() (UB).
uint64_t bmp_size_needed(const uint8_t* bytes, size_t size, bool* bad_height) {
  if (size < 26) return 0;
  const uint64_t offset = little_endian(bytes, 10, 4);
  const uint64_t header_size = little_endian(bytes, 14, 4);
  int64_t width = 0, height = 0;
  uint64_t bits = 0, compression = 0;
  if (header_size == 12) {
    width = little_endian(bytes, 18, 2);
    height = static_cast<int16_t>(little_endian(bytes, 20, 2));
    bits = little_endian(bytes, 24, 2);
  } else {
    if (size < 34) return 0;
    width = static_cast<int32_t>(little_endian(bytes, 18, 4));
    height = static_cast<int32_t>(little_endian(bytes, 22, 4));
    bits = little_endian(bytes, 28, 2);
    compression = little_endian(bytes, 30, 4);
  }
  *bad_height = height == INT32_MIN;
  if (height < 0) height = -height;
  if (compression != 0 && compression != 3) return 0;
  if (width <= 0 || width > kMaxImageSide || height > kMaxImageSide || bits == 0 || bits > 32)
    return 0;
  const uint64_t row_bytes = (static_cast<uint64_t>(width) * bits + 31) / 32 * 4;
  return std::max(offset, 14 + header_size) + row_bytes * static_cast<uint64_t>(height);
}

// The fewest bytes a JPEG of width x height can have: its entropy-coded
// data holds at least one bit for every 8x8 block of each component (the
// Huffman code of the block's DC difference, in a baseline scan and in a
// progressive file's first DC scan alike), and the component sampled at the
// full width covers at least a quarter of the rows (vertical sampling factors
// are 1 to 4). stb_image decodes a JPEG whose data stops early as if the rest
// were zeros, so a file of a few hundred bytes could make it decode 64 M
// pixels of nothing.
uint64_t jpeg_size_needed(int64_t width, int64_t height) {
  return static_cast<uint64_t>((width / 8) * (height / 32) + 7) / 8;
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

// stb_image 2.27 copies each IDAT chunk of a PNG into its buffer, which is
// null until the first non-empty one: an empty IDAT before it is a memcpy
// from a null pointer (undefined even for 0 bytes; found by the fuzzer under
// UBSan). True for such a file, walking the chunks as stb does.
bool png_has_empty_first_idat(const uint8_t* bytes, size_t size) {
  const auto big_endian = [&](size_t at) {
    return uint32_t{bytes[at]} << 24 | uint32_t{bytes[at + 1]} << 16 |
           uint32_t{bytes[at + 2]} << 8 | bytes[at + 3];
  };
  for (size_t at = 8; at + 8 <= size;) {
    const uint64_t length = big_endian(at);
    const bool idat = std::memcmp(bytes + at + 4, "IDAT", 4) == 0;
    if (idat) return length == 0;
    if (std::memcmp(bytes + at + 4, "IEND", 4) == 0) return false;
    at += 12 + length;  // length, type, data, CRC
  }
  return false;
}

// The checks made on a file's own bytes before stb_image reads its header.
void check_before_header(ImageFormat format, const uint8_t* bytes, size_t size,
                         const std::string& source) {
  // stb_image 2.27 reads the header's numbers into an int without an
  // overflow check (UB, found by the fuzzer, in comments' company too).
  if (format == ImageFormat::netpbm && read_netpbm_header(bytes, size).longest_number >= 9)
    refuse(source, "its PPM/PGM header has a number of 9 or more digits");
  if (format == ImageFormat::png && png_has_empty_first_idat(bytes, size))
    refuse(source, "its first IDAT chunk is empty (corrupt or hostile)");
  if (format == ImageFormat::jpeg && jpeg_has_oversized_huffman_table(bytes, size))
    refuse(source, "a JPEG Huffman table has more than 256 codes (corrupt or hostile)");
  bool bad_height = false;
  if (format == ImageFormat::bmp) bmp_size_needed(bytes, size, &bad_height);
  if (bad_height) refuse(source, "its BMP header has a height of -2147483648");
}

// The checks made once the header's width and height are known and within
// the bounds: the file must be long enough for them.
void check_after_header(ImageFormat format, const uint8_t* bytes, size_t size, int64_t width,
                        int64_t height, const std::string& source) {
  const std::string pixels = std::to_string(width) + "x" + std::to_string(height) + " pixels";
  uint64_t needed = 0;
  const char* name = "";
  if (format == ImageFormat::netpbm) {
    const NetpbmHeader header = read_netpbm_header(bytes, size);
    const uint64_t maxval = header.maxval;
    needed = netpbm_size_needed(bytes, header);
    name = "PPM/PGM";
    // stb_image 2.27 converts a 16-bit PPM/PGM's channels as if it were
    // 8-bit and then reads twice the buffer (found by the fuzzer under ASan).
    if (maxval > 255) {
      refuse(source, "a 16-bit PPM/PGM (maxval " + std::to_string(maxval) +
                         "); b3 reads 8-bit ones (maxval at most 255)");
    }
  } else if (format == ImageFormat::bmp) {
    bool bad_height = false;
    needed = bmp_size_needed(bytes, size, &bad_height);
    name = "BMP";
  } else if (format == ImageFormat::jpeg) {
    needed = jpeg_size_needed(width, height);
    if (needed > size) {
      refuse(source, "the JPEG file is too short for its size: " + pixels + " need at least " +
                         std::to_string(needed) + " bytes of coded data, it has " +
                         std::to_string(size) + " (truncated?)");
    }
    return;
  }
  if (needed > size) {
    refuse(source, std::string("the ") + name + " file is truncated: " + pixels + " need " +
                       std::to_string(needed) + " bytes, it has " + std::to_string(size));
  }
}

}  // namespace

DecodedImage decode_image_rgb(const uint8_t* bytes, size_t size, const std::string& source) {
  if (size == 0) refuse(source, "the file is empty");
  if (size > static_cast<size_t>(INT_MAX)) {
    refuse(source, "the file has " + std::to_string(size) + " bytes, more than stb_image reads");
  }
  const std::optional<ImageFormat> format = format_of(bytes, size);
  if (!format) {
    const char* foreign = foreign_format(bytes, size);
    refuse(source, (foreign != nullptr ? std::string("it is a ") + foreign + " file"
                                       : std::string("its first bytes are not those of an image")) +
                       "; b3 reads " + kFormatsRead);
  }
  check_before_header(*format, bytes, size, source);
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
  check_after_header(*format, bytes, size, width, height, source);
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
