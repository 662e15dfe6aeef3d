// Decoding one image file (data/image_decode.h): exact pixels for the netpbm
// formats (grayscale replicated into RGB), and refusals that name the file
// and the reason, before any pixel is decoded, for headers that claim more
// pixels than the bounds, and for empty, truncated or foreign bytes, with no
// raw bytes of the file in the message. (Decoding
// through folders of PNG, BMP and JPEG files is in test_data_image_folder.cpp.)
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/image_decode.h"
#include "tests/test_data_util.h"

using namespace b3;

namespace {

std::vector<uint8_t> netpbm(const std::string& magic, int width, int height,
                            const std::vector<uint8_t>& pixels) {
  const std::string header =
      magic + "\n" + std::to_string(width) + " " + std::to_string(height) + "\n255\n";
  std::vector<uint8_t> bytes(header.begin(), header.end());
  bytes.insert(bytes.end(), pixels.begin(), pixels.end());
  return bytes;
}

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

DecodedImage decode(const std::vector<uint8_t>& bytes) {
  return decode_image_rgb(bytes.data(), bytes.size(), "dir/x.ppm");
}

}  // namespace

TEST_CASE("decode_image_rgb: PPM pixels exactly, a PGM's gray replicated into RGB") {
  const std::vector<uint8_t> rgb{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18};
  const DecodedImage color = decode(netpbm("P6", 3, 2, rgb));
  CHECK(color.shape == ImageShape{2, 3, 3});
  CHECK(color.pixels == rgb);

  const DecodedImage gray = decode(netpbm("P5", 2, 1, {40, 200}));
  CHECK(gray.shape == ImageShape{1, 2, 3});
  CHECK(gray.pixels == std::vector<uint8_t>{40, 40, 40, 200, 200, 200});
}

TEST_CASE("decode_image_rgb: a header beyond the bounds is refused before decoding") {
  // Only the header is there: a decoder that allocated and read first would
  // fail differently (or allocate 20,000 x 10 x 3 bytes) before the bound.
  const std::vector<uint8_t> too_wide = netpbm("P6", int{kMaxImageSide} + 1, 1, {});
  CHECK_THROWS_WITH_AS(decode(too_wide),
                       doctest::Contains("'dir/x.ppm': its header says 16385x1 pixels; b3 "
                                         "decodes at most 16384 per side"),
                       std::runtime_error);
  const std::vector<uint8_t> too_tall = netpbm("P5", 1, int{kMaxImageSide} + 1, {});
  CHECK_THROWS_WITH_AS(decode(too_tall), doctest::Contains("1x16385 pixels"), std::runtime_error);
  // Each side within the bound, but 9,000 x 9,000 = 81 M pixels > 2^26.
  const std::vector<uint8_t> too_many = netpbm("P6", 9000, 9000, {});
  CHECK_THROWS_WITH_AS(decode(too_many), doctest::Contains("9000x9000 pixels"), std::runtime_error);
  // The bound itself passes the bounds (and is then refused as truncated).
  const std::vector<uint8_t> at_bound = netpbm("P5", int{kMaxImageSide}, 4, {});
  CHECK_THROWS_WITH_AS(decode(at_bound), doctest::Contains("16384x4 pixels need 65551 bytes"),
                       std::runtime_error);
}

// stb_image 2.27 copies a PPM's pixels without checking that the file has
// them, and returns the rest uninitialized; a BMP's missing bytes read as 0.
TEST_CASE("decode_image_rgb: truncated PPM/PGM and BMP files are refused, whole ones decode") {
  // "P6\n3 2\n255\n" is 11 bytes, then 18 of pixels; only 3 are there.
  const std::vector<uint8_t> truncated = netpbm("P6", 3, 2, {1, 2, 3});
  CHECK_THROWS_WITH_AS(decode(truncated),
                       "ImageFolder: cannot decode image 'dir/x.ppm': the PPM/PGM file is "
                       "truncated: 3x2 pixels need 29 bytes, it has 14",
                       std::runtime_error);
  // A comment in the header moves the pixels, not the count.
  std::vector<uint8_t> commented = netpbm("P5", 2, 1, {9, 8});
  const std::string comment = "# by hand\n";
  commented.insert(commented.begin() + 3, comment.begin(), comment.end());
  CHECK(decode(commented).pixels == std::vector<uint8_t>{9, 9, 9, 8, 8, 8});
  commented.pop_back();
  CHECK_THROWS_WITH_AS(decode(commented), doctest::Contains("truncated: 2x1 pixels need"),
                       std::runtime_error);

  // A BMP (stb reads its rows byte by byte; a missing byte reads as 0):
  // 3x2 pixels of 24 bits, rows padded to 12 bytes, after a 54-byte header.
  const test::TempDir tmp;
  const std::vector<uint8_t> rgb{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18};
  test::write_image(tmp / "x.bmp", 3, 2, rgb);
  std::vector<uint8_t> bmp = file_bytes(tmp / "x.bmp");
  REQUIRE(bmp.size() == 54 + 2 * 12);
  CHECK(decode(bmp).pixels == rgb);
  bmp.resize(bmp.size() - 2);
  CHECK_THROWS_WITH_AS(decode(bmp),
                       doctest::Contains("the BMP file is truncated: 3x2 pixels need 78 bytes, "
                                         "it has 76"),
                       std::runtime_error);
}

TEST_CASE(
    "decode_image_rgb: a JPEG too short for its size is refused, a smooth large one decodes") {
  // stb_image decodes a JPEG whose coded data stops early as if the rest
  // were zeros: a 64x64 file whose frame header is changed to say 8192x8192
  // would decode 64 M pixels. Every 8x8 block costs at least a bit, and the
  // full-width component covers at least a quarter of the rows:
  // (8192 / 8) x (8192 / 32) / 8 = 32768 bytes at least.
  const test::TempDir tmp;
  test::write_image(tmp / "noise.jpg", 64, 64, test::random_images(1, 7, 64 * 64 * 3));
  std::vector<uint8_t> jpeg = file_bytes(tmp / "noise.jpg");
  CHECK(decode(jpeg).shape == ImageShape{64, 64, 3});
  size_t frame = 0;
  while (frame + 1 < jpeg.size() && !(jpeg[frame] == 0xff && jpeg[frame + 1] == 0xc0)) ++frame;
  REQUIRE(frame + 9 < jpeg.size());
  jpeg[frame + 5] = 0x20;  // height 0x2000
  jpeg[frame + 6] = 0x00;
  jpeg[frame + 7] = 0x20;  // width 0x2000
  jpeg[frame + 8] = 0x00;
  REQUIRE(jpeg.size() < 32768);
  const std::string too_short =
      "the JPEG file is too short for its size: 8192x8192 pixels need "
      "at least 32768 bytes of coded data, it has " +
      std::to_string(jpeg.size());
  CHECK_THROWS_WITH_AS(decode(jpeg), doctest::Contains(too_short.c_str()), std::runtime_error);

  // The smallest real JPEGs are far above the bound: a black 1024x1024 one
  // (2 bits of DC and 4 of end-of-block per luma block at least; the bound
  // asks for 512 bytes) decodes.
  test::write_image(tmp / "black.jpg", 1024, 1024, std::vector<uint8_t>(1024 * 1024 * 3, 0), 50);
  const std::vector<uint8_t> black = file_bytes(tmp / "black.jpg");
  CAPTURE(black.size());
  const DecodedImage decoded = decode(black);
  CHECK(decoded.shape == ImageShape{1024, 1024, 3});
  CHECK(std::all_of(decoded.pixels.begin(), decoded.pixels.end(), [](uint8_t v) { return v < 2; }));
}

TEST_CASE("decode_image_rgb: TGA (no signature) and a BMP height of -2^31 are refused") {
  // An uncompressed true-colour TGA, 2x1: stb_image would read it, but a TGA
  // has no signature, and stb decodes a truncated RLE one as a full image of
  // zeros (tests/fuzz/corpus/image_decode/regression-rle-tga-zero-fill).
  std::vector<uint8_t> tga{0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1, 0, 24, 0};
  tga.insert(tga.end(), {30, 20, 10, 60, 50, 40});
  CHECK_THROWS_WITH_AS(decode(tga),
                       "ImageFolder: cannot decode image 'dir/x.ppm': its first bytes are not "
                       "those of an image; b3 reads PNG, JPEG, BMP and PPM/PGM",
                       std::runtime_error);
  // stb_image takes a BMP height's magnitude with abs(), undefined for -2^31.
  const test::TempDir tmp;
  test::write_image(tmp / "x.bmp", 1, 1, {1, 2, 3});
  std::vector<uint8_t> bmp = file_bytes(tmp / "x.bmp");
  bmp[22] = bmp[23] = bmp[24] = 0;
  bmp[25] = 0x80;
  CHECK_THROWS_WITH_AS(decode(bmp), doctest::Contains("its BMP header has a height of -2147483648"),
                       std::runtime_error);
}

TEST_CASE("decode_image_rgb: GIF, PSD, HDR and PIC are refused though stb_image reads them") {
  const std::string gif = "GIF89a\x01\x00\x01\x00\x00\x00\x00;";
  CHECK_THROWS_WITH_AS(decode(std::vector<uint8_t>(gif.begin(), gif.end())),
                       doctest::Contains("it is a GIF file; b3 reads PNG, JPEG, BMP and PPM/PGM"),
                       std::runtime_error);
  const std::string hdr = "#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 1 +X 1\n";
  CHECK_THROWS_WITH_AS(decode(std::vector<uint8_t>(hdr.begin(), hdr.end())),
                       doctest::Contains("it is a HDR file"), std::runtime_error);
}

TEST_CASE("decode_image_rgb: empty, truncated and foreign bytes are refused with the file name") {
  CHECK_THROWS_WITH_AS(decode({}),
                       "ImageFolder: cannot decode image 'dir/x.ppm': the file is empty",
                       std::runtime_error);
  const std::vector<uint8_t> only_magic{'P', '6'};
  CHECK_THROWS_WITH_AS(decode(only_magic), doctest::Contains("cannot decode image 'dir/x.ppm': "),
                       std::runtime_error);
  const std::string text = "not an image at all";
  CHECK_THROWS_WITH_AS(decode(std::vector<uint8_t>(text.begin(), text.end())),
                       doctest::Contains("its first bytes are not those of an image"),
                       std::runtime_error);
}

TEST_CASE("decode_image_rgb: stb_image's reasons quote no raw bytes from the file") {
  // A PNG whose second chunk has an unknown critical type of non-ASCII bytes:
  // stb_image's reason quotes the type (found by the fuzzer), which b3
  // escapes.
  const std::vector<uint8_t> png{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n',  // signature
                                 0,    0,   0,   13,  'I',  'H',  'D',  'R',   // IHDR, 13 bytes
                                 0,    0,   0,   2,   0,    0,    0,    1,
                                 8,    2,   0,   0,   0,                       // 2x1, 8-bit RGB
                                 0,    0,   0,   0,                            // CRC (unchecked)
                                 0,    0,   0,   0,   'Q',  0x88, 0x1b, 0x01,  // empty chunk
                                 0,    0,   0,   0};
  CHECK_THROWS_WITH_AS(decode(png), doctest::Contains("Q\\x88\\x1b\\x01 PNG chunk not known"),
                       std::runtime_error);
}

TEST_CASE("decode_image_rgb: a small PNG whose inflate would grow without bound is refused") {
  // Found by the fuzzer (tests/fuzz/corpus/image_decode/regression-inflate-
  // grows-to-2gib): a 6x4 gray PNG whose zlib stream made stb_image's inflate
  // double its buffer up to a 2 GiB allocation. Every allocation of the
  // decoder is now limited by what a 6x4 image can need.
  const std::vector<uint8_t> png{
      0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44,
      0x52, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00, 0x88,
      0x6f, 0x11, 0x99, 0x00, 0x00, 0x00, 0x25, 0x49, 0x44, 0x41, 0x54, 0x78, 0x50, 0x35, 0x30,
      0x30, 0x30, 0x30, 0x30, 0x35, 0x20, 0x34, 0x23, 0x00, 0x0d, 0x5e, 0x63, 0x5c, 0xf4, 0xef,
      0x05, 0xaf, 0x3c, 0x32, 0xcb, 0x03, 0x6e, 0x36, 0xd7, 0x35, 0x0a, 0x36, 0x20, 0x34, 0x0c,
      0x32, 0x2b, 0x35, 0x0a, 0xa2, 0x88, 0x97, 0x7e, 0x8b, 0xe8, 0x82, 0x49, 0x44, 0x41, 0x54,
      0x78, 0x50, 0x35, 0x30, 0x30, 0x30, 0x30, 0x30, 0x35, 0x20, 0x34, 0x23, 0x00, 0x0d, 0x5e,
      0x63, 0x5c, 0xf4, 0xef, 0x05, 0xaf, 0x3c, 0x32, 0xcb, 0x03, 0x6e, 0x36, 0xd7, 0x35, 0x0a,
      0x36, 0x20, 0x34, 0x0c, 0x32, 0x2b, 0x35, 0x0a, 0xa2, 0x88, 0x97, 0x8d, 0xe8, 0x82, 0x8d,
      0x9c, 0xc3, 0xbe, 0xb4, 0x6a, 0x36, 0x8c};
  CHECK_THROWS_WITH_AS(decode(png),
                       "ImageFolder: cannot decode image 'dir/x.ppm': decoding it needs more "
                       "memory than a 6x4 image can (a corrupt or hostile file)",
                       std::runtime_error);
}

TEST_CASE("decode_image_rgb: a JPEG Huffman table of more than 256 codes is refused before stb") {
  // Found by the fuzzer under UBSan (tests/fuzz/corpus/image_decode/
  // regression-jpeg-huffman-counts-over-256): stb_image 2.27 writes past its
  // 257-entry table when the 16 code counts sum to more than 256.
  std::vector<uint8_t> jpeg{0xff, 0xd8, 0xff, 0xc4, 0x01, 0x14, 0x00};  // SOI; DHT of 276 bytes
  for (int i = 0; i < 14; ++i) jpeg.push_back(0);
  jpeg.push_back(2);    // codes of 15 bits
  jpeg.push_back(255);  // codes of 16 bits: 257 in all
  jpeg.insert(jpeg.end(), 257, 0x01);
  jpeg.insert(jpeg.end(), {0xff, 0xd9});
  CHECK_THROWS_WITH_AS(decode(jpeg),
                       doctest::Contains("a JPEG Huffman table has more than 256 codes"),
                       std::runtime_error);
  // 256 codes are allowed through to stb (which then finds no frame).
  jpeg[4 + 2 + 1 + 14] = 1;
  jpeg.erase(jpeg.begin() + 4 + 2 + 1 + 16);
  jpeg[5] = 0x13;
  CHECK_THROWS_WITH_AS(decode(jpeg), doctest::Contains("corrupt or not an image"),
                       std::runtime_error);
}

TEST_CASE("decode_image_rgb: a 16-bit PPM/PGM is refused (stb_image 2.27 overflows on it)") {
  // Found by the fuzzer under ASan (tests/fuzz/corpus/image_decode/
  // regression-pgm-16-bit-overflow): stb converts a 16-bit PGM to RGB as if
  // it were 8-bit, then reads twice that buffer.
  const std::string header = "P5\n2 1\n65535\n";
  std::vector<uint8_t> pgm(header.begin(), header.end());
  pgm.insert(pgm.end(), {0x12, 0x34, 0x56, 0x78});
  CHECK_THROWS_WITH_AS(decode(pgm),
                       doctest::Contains("a 16-bit PPM/PGM (maxval 65535); b3 reads 8-bit ones"),
                       std::runtime_error);
}

TEST_CASE("decode_image_rgb: a PPM/PGM header number of 9 or more digits is refused before stb") {
  // Found by the fuzzer under UBSan (regression-pnm-number-overflow): stb
  // 2.27 reads header numbers into an int without an overflow check.
  const std::string header = "P6\n4111111111 1\n255\n";
  CHECK_THROWS_WITH_AS(decode(std::vector<uint8_t>(header.begin(), header.end())),
                       doctest::Contains("a number of 9 or more digits"), std::runtime_error);
  // Digits inside comments are not numbers (regression-pnm-number-after-
  // comments: a first version counted them and let the long height through).
  const std::string commented = "P6\r\n25#0 9\r#8\r1111111111 1\n255\n";
  CHECK_THROWS_WITH_AS(decode(std::vector<uint8_t>(commented.begin(), commented.end())),
                       doctest::Contains("a number of 9 or more digits"), std::runtime_error);
}

TEST_CASE("decode_image_rgb: a PNG whose first IDAT chunk is empty is refused before stb") {
  // Found by the fuzzer under UBSan (regression-png-empty-first-idat):
  // stb_image 2.27 copies an empty IDAT into its still-null buffer, a memcpy
  // from a null pointer. A 6x4 gray PNG: IHDR, an empty IDAT, then IEND.
  std::vector<uint8_t> png{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n',  // signature
                           0,    0,   0,   13,  'I',  'H',  'D',  'R',   // IHDR, 13 bytes
                           0,    0,   0,   6,   0,    0,    0,    4,    8, 0, 0, 0,
                           0,                                           // 6x4, 8-bit gray
                           0,    0,   0,   0,                           // CRC (unchecked)
                           0,    0,   0,   0,   'I',  'D',  'A',  'T',  // IDAT, 0 bytes
                           0,    0,   0,   0,                           // CRC
                           0,    0,   0,   0,   'I',  'E',  'N',  'D',  0, 0, 0, 0};
  CHECK_THROWS_WITH_AS(decode(png), doctest::Contains("its first IDAT chunk is empty"),
                       std::runtime_error);
  // An empty IDAT after a non-empty one is stb's to judge (here: the data
  // is not a zlib stream, and stb says so).
  const std::vector<uint8_t> first_idat{0, 0, 0, 1, 'I', 'D', 'A', 'T', 0x78, 0, 0, 0, 0};
  png.insert(png.begin() + 33, first_idat.begin(), first_idat.end());
  CHECK_THROWS_WITH_AS(decode(png), doctest::Contains("(corrupt or not an image?)"),
                       std::runtime_error);
}

TEST_CASE("decode_image_rgb: a JPEG scan that uses an undefined Huffman table reads zeros") {
  // Found by the fuzzer under UBSan (regression-jpeg-undefined-huffman-
  // table): stb_image 2.27 does not check that a scan's tables were defined
  // and read the table's memory uninitialized. stb's allocations are now
  // zero-filled: such a table decodes every code as symbol 0 of no bits, so
  // the scan consumes none of its data, and stb then meets that data where
  // it expects a marker and refuses the file, the same way on every run.
  // This shows the behaviour with zeroed tables; it does not reproduce the
  // uninitialized read, which needs memory left nonzero by earlier decodes
  // (the fuzzer's process had them; a fresh test process gets zero pages).
  const test::TempDir tmp;
  test::write_image(tmp / "x.jpg", 16, 8, test::random_images(1, 3, 16 * 8 * 3));
  std::vector<uint8_t> jpeg = file_bytes(tmp / "x.jpg");
  CHECK(decode(jpeg).shape == ImageShape{8, 16, 3});
  size_t scan = 0;
  while (scan + 1 < jpeg.size() && !(jpeg[scan] == 0xff && jpeg[scan + 1] == 0xda)) ++scan;
  REQUIRE(scan + 6 < jpeg.size());
  REQUIRE(jpeg[scan + 4] == 3);  // three components; the first's tables follow its id
  jpeg[scan + 6] = 0x33;         // DC table 3, AC table 3: never defined
  CHECK_THROWS_WITH_AS(decode(jpeg), doctest::Contains("unknown marker"), std::runtime_error);
}
