// libFuzzer target: decoding one image file (data/image_decode.h, what
// ImageFolder runs on every file) from arbitrary bytes: PNG, JPEG, BMP,
// PPM/PGM through stb_image (anything else refused). An accepted image must be within the
// bounds and hold exactly height x width x 3 bytes.
#include <cstdint>
#include <exception>

#include "data/image_decode.h"
#include "tests/fuzz/broken_promise.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  b3::DecodedImage image;
  try {
    image = b3::decode_image_rgb(data, size, "fuzz input");
  } catch (const std::exception& refusal) {
    b3::fuzz::check_refusal(refusal);
    return 0;
  }
  const b3::ImageShape& shape = image.shape;
  if (shape.channels != 3 || shape.height <= 0 || shape.width <= 0 ||
      shape.height > b3::kMaxImageSide || shape.width > b3::kMaxImageSide ||
      shape.height * shape.width > b3::kMaxImagePixels)
    b3::fuzz::broken_promise("image: a shape beyond the bounds");
  if (static_cast<int64_t>(image.pixels.size()) != shape.bytes())
    b3::fuzz::broken_promise("image: pixel bytes differ from height x width x 3");
  return 0;
}
