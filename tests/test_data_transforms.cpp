// The image transform against a plain double-precision reference of
// torchvision's formulas written here (bilinear resize with align_corners=False,
// round half to even, crop, flip, /255, normalize), the per-pixel kernel
// function (what a CUDA kernel calls) against the CPU loops bit for bit, crop
// offsets as torchvision draws and centres them, both memory formats, f32,
// f64 and f16 outputs, and clear errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "data/transforms.h"
#include "tests/support/reference.h"
#include "tests/test_data_util.h"

using namespace b3;

namespace {

// uint8 images [n, c, h, w] (NHWC bytes) with random pixels.
Tensor random_batch(int64_t n, int64_t c, int64_t h, int64_t w, uint64_t seed) {
  Tensor images =
      empty({n, c, h, w}, TensorOptions(DType::u8).with_format(MemoryFormat::channels_last));
  Generator gen(seed);
  uint8_t* p = images.data<uint8_t>();
  for (int64_t i = 0; i < images.numel(); ++i) p[i] = static_cast<uint8_t>(gen.below(256));
  return images;
}

// torchvision's pipeline for one output value, in double, from the formulas:
// torch upsample_bilinear2d (align_corners=False), torch.round, crop, hflip,
// ToTensor's /255, Normalize. The weights are ATen's (rounded to float as it
// does for float tensors); the arithmetic is in double.
double reference_value(const Tensor& images, int64_t i, int64_t c, int64_t y, int64_t x,
                       const TransformGeometry& g, const CropFlip& p, bool round, double mean,
                       double std) {
  // ATen's weights for float tensors (see transform_kernel.h): the scale in
  // float, the source coordinate in double, the weights rounded to float.
  auto source = [](int64_t dst, int64_t in, int64_t out, int64_t& i0, int64_t& i1, double& l0,
                   double& l1) {
    if (in == out) {
      i0 = i1 = dst;
      l0 = 1;
      l1 = 0;
      return;
    }
    const float scale = static_cast<float>(in) / static_cast<float>(out);
    const double src = std::max(scale * (dst + 0.5) - 0.5, 0.0);
    i0 = static_cast<int64_t>(std::floor(src));
    i1 = std::min(i0 + 1, in - 1);
    const float lambda1 = static_cast<float>(src - i0);
    l1 = lambda1;
    l0 = 1.0f - lambda1;
  };
  const int64_t ry = y + p.top;
  const int64_t rx = (p.flip ? g.out_width - 1 - x : x) + p.left;
  int64_t y0, y1, x0, x1;
  double ly0, ly1, lx0, lx1;
  source(ry, g.in_height, g.resized_height, y0, y1, ly0, ly1);
  source(rx, g.in_width, g.resized_width, x0, x1, lx0, lx1);
  auto at = [&](int64_t yy, int64_t xx) { return images.item_at({i, c, yy, xx}); };
  double v =
      ly0 * (lx0 * at(y0, x0) + lx1 * at(y0, x1)) + ly1 * (lx0 * at(y1, x0) + lx1 * at(y1, x1));
  if (round) v = std::nearbyint(v);  // half to even, as torch.round
  return (v / 255.0 - mean) / std;
}

struct Comparison {
  double worst = 0;  // largest |ours - reference|
  int64_t off = 0;   // values further than 1e-6 from the reference
  int64_t values = 0;
};

Comparison compare_with_reference(const Tensor& images, const Tensor& out,
                                  const std::vector<CropFlip>& params,
                                  const TransformOptions& options) {
  const TransformGeometry g =
      transform_geometry(options, images.size(2), images.size(3), images.size(1));
  Comparison result;
  for (int64_t i = 0; i < out.size(0); ++i)
    for (int64_t c = 0; c < out.size(1); ++c)
      for (int64_t y = 0; y < out.size(2); ++y)
        for (int64_t x = 0; x < out.size(3); ++x) {
          const double mean = options.mean.empty() ? 0.0 : options.mean[static_cast<size_t>(c)];
          const double std = options.std.empty() ? 1.0 : options.std[static_cast<size_t>(c)];
          const double expected =
              reference_value(images, i, c, y, x, g, params[static_cast<size_t>(i)],
                              options.round_resized, mean, std);
          const double error = std::abs(out.item_at({i, c, y, x}) - expected);
          result.worst = std::max(result.worst, error);
          result.off += error > 1e-6;
          ++result.values;
        }
  return result;
}

}  // namespace

TEST_CASE(
    "transforms: the reference pipeline (resize 256, random crop 224, flip) matches the formulas") {
  const Tensor images = random_batch(2, 3, 32, 32, 1);
  TransformOptions options = TransformOptions::reference_train();
  options.horizontal_flip = true;
  Generator gen(4);
  const TransformGeometry g = transform_geometry(options, 32, 32, 3);
  std::vector<CropFlip> params = draw_crop_flips(options, g, 2, gen);
  params[0].flip = 1;  // one of each, whatever the draw
  params[1].flip = 0;
  const Tensor out = apply_transform(images, params, options);
  CHECK(out.shape() == Shape{2, 3, 224, 224});
  CHECK(out.dtype() == DType::f32);
  CHECK(out.is_contiguous(MemoryFormat::contiguous));
  const Comparison c = compare_with_reference(images, out, params, options);
  // Rounded to uint8 levels: f32 interpolation can differ from double only
  // where the exact value is within ~1e-5 of a .5 tie; such a value rounds to
  // the neighbouring level (1/255 away). Everywhere else the values are equal
  // up to f32's rounding of level/255 (< 1e-7).
  CHECK(c.worst <= 1.0 / 255 + 1e-6);
  CHECK(c.off * 1000 <= c.values);  // at most 0.1% of values at a tie
  // Unrounded: f32 against double, values up to 255 blended with weights in
  // [0, 1]: a few f32 ulps of 255 (~3e-5 levels), i.e. ~1e-7 after /255.
  options.round_resized = false;
  const Comparison smooth =
      compare_with_reference(images, apply_transform(images, params, options), params, options);
  CHECK(smooth.worst < 1e-6);
}

TEST_CASE(
    "transforms: odd sizes, downscaling, non-square input and normalization match the formulas") {
  struct Case {
    int64_t h, w, resize, crop;
    bool random, flip;
  };
  const Case cases[] = {{32, 32, 37, 32, false, false},  // centre offset 2.5 -> 2
                        {32, 32, 20, 0, false, false},   // downscale (antialias=False)
                        {24, 40, 0, 20, true, true},     // no resize, random crop of a wide image
                        {24, 40, 30, 29, true, true},    // non-square input resized square
                        {7, 7, 1, 0, false, false},      // down to one pixel
                        {1, 1, 5, 3, true, false}};      // up from one pixel
  Generator gen(8);
  for (const Case& k : cases) {
    CAPTURE(k.h);
    CAPTURE(k.w);
    CAPTURE(k.resize);
    CAPTURE(k.crop);
    const Tensor images = random_batch(3, 3, k.h, k.w, 2);
    TransformOptions options;
    options.resize = k.resize;
    options.crop = k.crop;
    options.random_crop = k.random;
    options.horizontal_flip = k.flip;
    options.mean = {0.485, 0.456, 0.406};
    options.std = {0.229, 0.224, 0.225};
    options.round_resized = false;
    const TransformGeometry g = transform_geometry(options, k.h, k.w, 3);
    const std::vector<CropFlip> params = draw_crop_flips(options, g, 3, gen);
    const Comparison c =
        compare_with_reference(images, apply_transform(images, params, options), params, options);
    // Bound: the f32 blend is within ~3 ulps of 255 (4.6e-5 levels, 1.8e-7
    // after /255), divided by std >= 0.224 (8e-7), plus f32's rounding of
    // (x - mean) / std for |values| <= 2.7 (2 ulps, 5e-7): 1.3e-6. Measured: 6e-7.
    CHECK(c.worst < 2e-6);
  }
}

TEST_CASE("transforms: without resize or crop it is exactly x / 255 in either format") {
  const Tensor images = random_batch(3, 3, 5, 7, 3);
  for (MemoryFormat format : {MemoryFormat::contiguous, MemoryFormat::channels_last}) {
    TransformOptions options;
    options.format = format;
    Generator gen(0);
    const Tensor out = transform_images(images, options, gen);
    CHECK(out.is_contiguous(format));
    const std::vector<double> got = out.to_doubles();
    const std::vector<double> pixels = images.to_doubles();
    bool exact = true;
    for (size_t k = 0; k < got.size(); ++k) {
      exact &= got[k] == static_cast<double>(static_cast<float>(pixels[k]) / 255.0f);
    }
    CHECK(exact);
  }
}

TEST_CASE("transforms: the per-pixel kernel function equals the CPU loops bit for bit") {
  // transform_value() is what a CUDA kernel computes per output element.
  const Tensor images = random_batch(3, 3, 32, 32, 5);
  const uint8_t* pixels = images.data<uint8_t>();
  for (bool round : {true, false}) {
    TransformOptions options = TransformOptions::reference_train();
    options.horizontal_flip = true;
    options.round_resized = round;
    options.mean = {0.5, 0.25, 0.125};
    options.std = {0.5, 2.0, 0.3};
    Generator gen(6);
    const TransformGeometry g = transform_geometry(options, 32, 32, 3);
    const std::vector<CropFlip> params = draw_crop_flips(options, g, 3, gen);
    const Tensor out = apply_transform(images, params, options);
    const float* o = out.data<float>();
    int64_t differ = 0;
    for (int64_t i = 0; i < 3; ++i)
      for (int32_t c = 0; c < 3; ++c)
        for (int32_t y = 0; y < 224; ++y)
          for (int32_t x = 0; x < 224; ++x) {
            const float v = transform_value(pixels + i * 3072, g, params[static_cast<size_t>(i)], c,
                                            y, x, static_cast<float>(options.mean[c]),
                                            static_cast<float>(options.std[c]));
            differ += v != o[((i * 3 + c) * 224 + y) * 224 + x];
          }
    CHECK(differ == 0);
  }
}

TEST_CASE("transforms: crop offsets as torchvision draws and centres them") {
  TransformOptions center;
  const auto offsets = [&](int64_t resize, int64_t crop) {
    center.resize = resize;
    center.crop = crop;
    Generator gen(0);
    return draw_crop_flips(center, transform_geometry(center, 32, 32, 3), 1, gen)[0];
  };
  // int(round((R - C) / 2.0)) with Python's round half to even.
  CHECK(offsets(256, 224).top == 16);
  CHECK(offsets(37, 32).top == 2);   // 2.5 -> 2
  CHECK(offsets(35, 32).top == 2);   // 1.5 -> 2
  CHECK(offsets(33, 32).left == 0);  // 0.5 -> 0
  CHECK(offsets(32, 32).top == 0);

  TransformOptions train = TransformOptions::reference_train();
  train.horizontal_flip = true;
  const TransformGeometry g = transform_geometry(train, 32, 32, 3);
  Generator gen(1), again(1);
  const std::vector<CropFlip> params = draw_crop_flips(train, g, 2000, gen);
  CHECK(draw_crop_flips(train, g, 2000, again) == params);
  int32_t lowest = 1000, highest = -1;
  int64_t flips = 0;
  for (const CropFlip& p : params) {
    lowest = std::min({lowest, p.top, p.left});
    highest = std::max({highest, p.top, p.left});
    flips += p.flip;
  }
  CHECK(lowest == 0);
  CHECK(highest == 32);  // offsets cover [0, 256 - 224]
  // p = 0.5 over 2,000 draws: mean 1,000, standard deviation ~22; +-150 is ~7 sigma.
  CHECK(std::abs(flips - 1000) < 150);
  // The crop of the whole image draws nothing, as torchvision's RandomCrop.
  TransformOptions whole;
  whole.random_crop = true;
  whole.crop = 32;
  Generator fixed(3), untouched(3);
  draw_crop_flips(whole, transform_geometry(whole, 32, 32, 3), 5, fixed);
  CHECK(fixed.next_u64() == untouched.next_u64());
}

TEST_CASE("transforms: random crops draw top and left each from its own spare (non-square)") {
  // 40 rows x 36 columns cropped to 32 x 32: top in [0, 8], left in [0, 4].
  // A square image would not tell the two spares apart.
  TransformOptions options;
  options.random_crop = true;
  options.crop = 32;
  const TransformGeometry g = transform_geometry(options, 40, 36, 3);
  Generator gen(5);
  const std::vector<CropFlip> params = draw_crop_flips(options, g, 3000, gen);
  std::vector<int64_t> tops(9, 0), lefts(5, 0);
  for (const CropFlip& p : params) {
    REQUIRE(p.top >= 0);
    REQUIRE(p.top <= 8);
    REQUIRE(p.left >= 0);
    REQUIRE(p.left <= 4);
    ++tops[static_cast<size_t>(p.top)];
    ++lefts[static_cast<size_t>(p.left)];
  }
  // Uniform: 3000 / 9 = 333 per top (sd ~17), 600 per left (sd ~22); a
  // quarter off is more than 4 sd either way.
  for (int64_t n : tops) CHECK(std::abs(n - 333) < 84);
  for (int64_t n : lefts) CHECK(std::abs(n - 600) < 150);
  // And the pixels come from there: against the formula, image by image.
  const Tensor images = random_batch(4, 3, 40, 36, 8);
  const std::vector<CropFlip> four(params.begin(), params.begin() + 4);
  const Comparison c =
      compare_with_reference(images, apply_transform(images, four, options), four, options);
  CHECK(c.off == 0);
}

TEST_CASE("transforms: both memory formats, f64 and f16 outputs hold the same values") {
  const Tensor images = random_batch(2, 3, 32, 32, 9);
  TransformOptions options = TransformOptions::reference_eval();
  options.resize = 40;
  options.crop = 36;
  Generator gen(0);
  const Tensor nchw = transform_images(images, options, gen);
  options.format = MemoryFormat::channels_last;
  const Tensor nhwc = transform_images(images, options, gen);
  CHECK(nhwc.is_contiguous(MemoryFormat::channels_last));
  CHECK(nhwc.to_doubles() == nchw.to_doubles());
  options.dtype = DType::f64;
  const Tensor f64 = transform_images(images, options, gen);
  CHECK(f64.dtype() == DType::f64);
  CHECK(f64.to_doubles() == nchw.to_doubles());  // the f32 values, widened
  options.dtype = DType::f16;
  const Tensor f16 = transform_images(images, options, gen);
  CHECK(f16.dtype() == DType::f16);
  // f16 has 11 significant bits: values in [0, 1] are within 2^-12 of f32's.
  CHECK(test::max_relative_error(f16, nchw) <= 1.0 / 4096);
  // NCHW uint8 input (not the loader's NHWC) gives the same result.
  options.dtype = DType::f32;
  options.format = MemoryFormat::contiguous;
  CHECK(transform_images(images.contiguous(MemoryFormat::contiguous), options, gen).to_doubles() ==
        nchw.to_doubles());
  // An empty batch is an empty result.
  const Tensor none = transform_images(random_batch(0, 3, 32, 32, 1), options, gen);
  CHECK(none.shape() == Shape{0, 3, 36, 36});
}

TEST_CASE("transforms: apply_transform_into reuses the output tensor") {
  const Tensor images = random_batch(2, 3, 32, 32, 4);
  TransformOptions options = TransformOptions::reference_eval();
  Generator gen(0);
  const std::vector<CropFlip> params =
      draw_crop_flips(options, transform_geometry(options, 32, 32, 3), 2, gen);
  Tensor out = zeros({2, 3, 224, 224});
  const void* storage = out.data_ptr();
  apply_transform_into(images, params, options, out);
  CHECK(out.data_ptr() == storage);  // written in place
  // Against the independent formula (apply_transform calls this function, so
  // comparing the two would prove nothing).
  const Comparison c = compare_with_reference(images, out, params, options);
  CHECK(c.off == 0);
  CHECK(c.values == 2 * 3 * 224 * 224);
  Tensor wrong = zeros({2, 3, 224, 224}, TensorOptions().with_format(MemoryFormat::channels_last));
  CHECK_THROWS_WITH_AS(apply_transform_into(images, params, options, wrong),
                       doctest::Contains("the output must be a CPU tensor [2, 3, 224, 224] f32"),
                       std::invalid_argument);
}

TEST_CASE("transforms: bad options and inputs are named") {
  const Tensor images = random_batch(2, 3, 32, 32, 1);
  Generator gen(0);
  TransformOptions options;
  options.crop = 40;
  CHECK_THROWS_WITH_AS(transform_images(images, options, gen),
                       doctest::Contains("crop 40 is larger than the input image 32x32"),
                       std::invalid_argument);
  options = TransformOptions::reference_train();
  options.crop = 300;
  CHECK_THROWS_WITH_AS(transform_images(images, options, gen),
                       doctest::Contains("crop 300 is larger than the resized image 256x256"),
                       std::invalid_argument);
  options = TransformOptions{};
  options.resize = -1;
  CHECK_THROWS_WITH_AS(transform_images(images, options, gen),
                       doctest::Contains("resize must be >= 0"), std::invalid_argument);
  options = TransformOptions{};
  options.mean = {0.5, 0.5};
  options.std = {0.5, 0.5};
  CHECK_THROWS_WITH_AS(transform_images(images, options, gen),
                       doctest::Contains("one value per channel (3), got 2 and 2"),
                       std::invalid_argument);
  options.mean = {0.5, 0.5, 0.5};
  options.std = {0.5, 0.0, 0.5};
  CHECK_THROWS_WITH_AS(transform_images(images, options, gen),
                       doctest::Contains("std values must be finite and nonzero"),
                       std::invalid_argument);
  options = TransformOptions{};
  options.dtype = DType::u8;
  CHECK_THROWS_WITH_AS(transform_images(images, options, gen),
                       doctest::Contains("output dtype u8 is not f32, f64 or f16"),
                       std::invalid_argument);
  options = TransformOptions{};
  CHECK_THROWS_WITH_AS(transform_images(zeros({2, 3, 8, 8}), options, gen),
                       doctest::Contains("expected uint8 images [N, C, H, W]"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(apply_transform(images, {CropFlip{}}, options),
                       doctest::Contains("1 crop/flip parameters for a batch of 2"),
                       std::invalid_argument);
  options.crop = 30;
  CHECK_THROWS_WITH_AS(apply_transform(images, {CropFlip{0, 0, 0}, CropFlip{3, 0, 0}}, options),
                       doctest::Contains("image 1 has crop offset (3, 0)"), std::invalid_argument);
}
