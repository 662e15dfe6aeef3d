// The device image transform (data/transform_cuda.h), the pinned upload
// buffer (tensor/pinned_buffer.h) and DeviceBatches (data/device_batches.h)
// against the CPU transform (data/transforms.h), which test_data_transforms
// checks against torchvision's formulas. Same uint8 images, same CropFlips
// (drawn on the host by draw_crop_flips), both memory formats, f32 and f16,
// with and without rounding to uint8 levels and Normalize.
//
// Tolerances, and why:
// - Where every product of the bilinear blend is exact in f32 (the reference
//   32 -> 256 resize, any power-of-two ratio, and no resize), the CPU and the
//   GPU evaluate the same operations (transform_kernel.h) on exact
//   intermediates, and the last steps (round to nearest even, /255, -mean,
//   /std, one rounding to f16) are correctly rounded IEEE operations on both:
//   the outputs are equal bit for bit, f32 and f16. Required: equality.
// - In general the blends a*l0 + b*l1 are not exact, and both compilers may
//   fuse a product and the sum into one FMA (g++ contracts by default in C++,
//   even with -std=c++20, and -march=native has FMA; nvcc --fmad=true) but not
//   necessarily the same product. With u = 2^-24, pixel levels <= 255 and
//   weights summing to 1: each blend is within 2u*255 of the exact blend of
//   its inputs, so each side's resized value v is within ~4.1u*255 of the
//   exact v (computed here in double), and the two sides within
//   delta_v = 9u*255 of each other. Then
//     * unrounded: out = (v/255 - mean)/std differs by delta_v/255/|std| plus
//       three correctly rounded operations per side: at most
//       16u(1 + |mean|)/|std| (values v/255 <= 1);
//     * rounded to levels: where the exact v is farther than 2*delta_v from a
//       .5 tie both sides round to the same level and the outputs are equal
//       bit for bit (required); nearer a tie the levels may differ by one, i.e.
//       by 1/255/|std| plus the bound above.
// - f16 outputs: the f32 value (within the bound above of the CPU's f32
//   value) rounded once to nearest even: within 2^-11 |v| + 2^-25 more
//   (test::half_output_bound).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "data/device_batches.h"
#include "data/loader_source.h"
#include "data/synthetic.h"
#include "data/transform_cuda.h"
#include "data/transforms.h"
#include "tensor/pinned_buffer.h"
#include "tests/support/cuda.h"

using namespace b3;
using test::DeviceBuffer;

namespace {

constexpr double kU = test::kFloatUnitRoundoff;     // 2^-24
constexpr double kResizedDelta = 9.0 * kU * 255.0;  // |v_cpu - v_gpu| before rounding (see top)

// uint8 images [n, c, h, w] (NHWC bytes) with random pixels.
Tensor random_batch(int64_t n, int64_t c, int64_t h, int64_t w, uint64_t seed) {
  Tensor images =
      empty({n, c, h, w}, TensorOptions(DType::u8).with_format(MemoryFormat::channels_last));
  Generator gen(seed);
  uint8_t* p = images.data<uint8_t>();
  for (int64_t i = 0; i < images.numel(); ++i) p[i] = static_cast<uint8_t>(gen.below(256));
  return images;
}

struct Geometry {
  int64_t n, c, h, w, resize, crop;
  bool random, flip;
};

TransformOptions make_options(const Geometry& s, bool round, bool normalize, DType dtype,
                              MemoryFormat format) {
  TransformOptions options;
  options.resize = s.resize;
  options.crop = s.crop;
  options.random_crop = s.random;
  options.horizontal_flip = s.flip;
  options.round_resized = round;
  if (normalize) {  // ImageNet's, extended to any channel count
    const double mean[] = {0.485, 0.456, 0.406};
    const double std[] = {0.229, 0.224, 0.225};
    for (int64_t ch = 0; ch < s.c; ++ch) {
      options.mean.push_back(mean[ch % 3]);
      options.std.push_back(std[ch % 3]);
    }
  }
  options.dtype = dtype;
  options.format = format;
  return options;
}

// The GPU transform of a CPU batch, brought back to the CPU. The output is
// filled with NaN first, so an element the kernel does not write fails.
Tensor gpu_transform(const Tensor& images, const std::vector<CropFlip>& params,
                     const TransformOptions& options) {
  const Device cuda = Device::cuda(0);
  const Tensor nhwc = images.contiguous(MemoryFormat::channels_last);
  Tensor device_images =
      empty(images.shape(),
            TensorOptions(DType::u8).with_device(cuda).with_format(MemoryFormat::channels_last));
  copy_bytes_cuda(device_images.data_ptr(), cuda, nhwc.data_ptr(), Device::cpu(), nhwc.nbytes());
  DeviceBuffer<CropFlip> device_params(params);
  const TransformGeometry g =
      transform_geometry(options, images.size(2), images.size(3), images.size(1));
  Tensor out = empty({images.size(0), g.channels, g.out_height, g.out_width},
                     TensorOptions(options.dtype).with_device(cuda).with_format(options.format));
  out.fill_(std::numeric_limits<double>::quiet_NaN());
  cuda::apply_transform_cuda(device_images, device_params.data(), options, out);
  Tensor host = out.to(Device::cpu());  // waits for the compute stream
  REQUIRE(host.shape() == out.shape());
  REQUIRE(host.dtype() == options.dtype);
  return host;
}

std::vector<float> as_floats(const Tensor& t) {
  const std::vector<double> values = t.to_doubles();
  return std::vector<float>(values.begin(), values.end());
}

// The resized value v (before rounding) of every output element, in logical
// order [n][c][y][x], in double with the float weights both sides use: the
// exact v, to find the elements near a .5 tie.
std::vector<double> exact_resized_values(const Tensor& images, const std::vector<CropFlip>& params,
                                         const TransformGeometry& g) {
  const Tensor nhwc = images.contiguous(MemoryFormat::channels_last);
  const uint8_t* pixels = nhwc.data<uint8_t>();
  const int64_t image_bytes = int64_t{g.in_height} * g.in_width * g.channels;
  std::vector<double> values;
  for (size_t i = 0; i < params.size(); ++i) {
    const uint8_t* image = pixels + static_cast<int64_t>(i) * image_bytes;
    for (int32_t c = 0; c < g.channels; ++c) {
      for (int32_t y = 0; y < g.out_height; ++y) {
        const LinearSample sy = linear_sample(y + params[i].top, g.in_height, g.resized_height);
        for (int32_t x = 0; x < g.out_width; ++x) {
          const LinearSample sx =
              linear_sample(resized_column(x, params[i], g.out_width), g.in_width, g.resized_width);
          auto at = [&](int32_t row, int32_t col) {
            return static_cast<double>(
                image[(static_cast<int64_t>(row) * g.in_width + col) * g.channels + c]);
          };
          const double top = at(sy.index0, sx.index0) * double{sx.lambda0} +
                             at(sy.index0, sx.index1) * double{sx.lambda1};
          const double bottom = at(sy.index1, sx.index0) * double{sx.lambda0} +
                                at(sy.index1, sx.index1) * double{sx.lambda1};
          values.push_back(top * double{sy.lambda0} + bottom * double{sy.lambda1});
        }
      }
    }
  }
  return values;
}

// Per-element f32 bounds of |gpu - cpu| (see the top of the file); counts
// the elements near a tie.
std::vector<double> general_f32_bound(const Tensor& images, const std::vector<CropFlip>& params,
                                      const TransformOptions& options, int64_t& near_ties) {
  const TransformGeometry g =
      transform_geometry(options, images.size(2), images.size(3), images.size(1));
  const std::vector<double> v = exact_resized_values(images, params, g);
  const int64_t plane = int64_t{g.out_height} * g.out_width;
  std::vector<double> bound(v.size());
  near_ties = 0;
  for (size_t k = 0; k < v.size(); ++k) {
    const size_t c = static_cast<size_t>((static_cast<int64_t>(k) / plane) % g.channels);
    const double mean = options.mean.empty() ? 0.0 : options.mean[c];
    const double std = options.std.empty() ? 1.0 : options.std[c];
    const double smooth = 16.0 * kU * (1.0 + std::abs(mean)) / std::abs(std);
    if (!options.round_resized) {
      bound[k] = smooth;
    } else if (std::abs(v[k] - std::floor(v[k]) - 0.5) <= 2.0 * kResizedDelta) {
      bound[k] = 1.0 / 255.0 / std::abs(std) + smooth;  // may round to the neighbouring level
      ++near_ties;
    } else {
      bound[k] = 0.0;  // same level on both sides: same bits
    }
  }
  return bound;
}

const Geometry kExactGeometries[] = {
    {3, 3, 32, 32, 256, 224, true, true},    // the reference training transform
    {1, 3, 32, 32, 256, 224, false, false},  // the reference evaluation transform
    {3, 3, 32, 32, 0, 28, true, true},       // no resize: random crop of the 32x32 image
    {5, 1, 16, 32, 64, 61, true, true},      // ratios 1/4 and 1/2, one channel, odd crop
    {2, 4, 8, 8, 64, 0, false, true},        // 8x upscale, four channels, no crop
};

const Geometry kGeneralGeometries[] = {
    {3, 3, 32, 32, 37, 32, false, false},  // odd upscale, centre crop offset 2.5 -> 2
    {2, 3, 32, 32, 20, 0, false, true},    // downscale (antialias=False)
    {3, 3, 24, 40, 30, 29, true, true},    // non-square input resized square
    {1, 3, 7, 7, 1, 0, false, false},      // down to one pixel
    {3, 1, 1, 1, 5, 3, true, false},       // up from one pixel
    {4, 3, 29, 37, 50, 45, true, true},    // odd everything
};

}  // namespace

TEST_CASE("cuda transform: equals the CPU transform bit for bit where the blends are exact") {
  test::skip_unless_cuda_device();
  uint64_t seed = 100;
  for (const Geometry& s : kExactGeometries) {
    for (bool round : {true, false}) {
      for (bool normalize : {false, true}) {
        for (MemoryFormat format : {MemoryFormat::channels_last, MemoryFormat::contiguous}) {
          CAPTURE(s.h);
          CAPTURE(s.w);
          CAPTURE(s.resize);
          CAPTURE(s.crop);
          CAPTURE(round);
          CAPTURE(normalize);
          CAPTURE(memory_format_name(format));
          const Tensor images = random_batch(s.n, s.c, s.h, s.w, ++seed);
          const TransformOptions f32 = make_options(s, round, normalize, DType::f32, format);
          const TransformOptions f16 = make_options(s, round, normalize, DType::f16, format);
          Generator gen(seed);
          const TransformGeometry g = transform_geometry(f32, s.h, s.w, s.c);
          const std::vector<CropFlip> params = draw_crop_flips(f32, g, s.n, gen);

          const std::vector<float> cpu = as_floats(apply_transform(images, params, f32));
          const std::vector<float> gpu = as_floats(gpu_transform(images, params, f32));
          const std::vector<double> expected(cpu.begin(), cpu.end());
          test::check_within(gpu, expected, std::vector<double>(cpu.size(), 0.0), "f32");

          const std::vector<float> cpu16 = as_floats(apply_transform(images, params, f16));
          const std::vector<float> gpu16 = as_floats(gpu_transform(images, params, f16));
          test::check_within(gpu16, std::vector<double>(cpu16.begin(), cpu16.end()),
                             std::vector<double>(cpu16.size(), 0.0), "f16 against the CPU's f16");
          test::check_within(gpu16, expected,
                             test::half_output_bound(expected, std::vector<double>(cpu.size())),
                             "f16 against the f32 values");
        }
      }
    }
  }
}

TEST_CASE("cuda transform: general sizes agree within the rounding of the blends") {
  test::skip_unless_cuda_device();
  uint64_t seed = 200;
  int64_t total_near_ties = 0, total_values = 0;
  for (const Geometry& s : kGeneralGeometries) {
    for (bool round : {true, false}) {
      for (bool normalize : {false, true}) {
        for (MemoryFormat format : {MemoryFormat::channels_last, MemoryFormat::contiguous}) {
          CAPTURE(s.h);
          CAPTURE(s.w);
          CAPTURE(s.resize);
          CAPTURE(s.crop);
          CAPTURE(round);
          CAPTURE(normalize);
          CAPTURE(memory_format_name(format));
          const Tensor images = random_batch(s.n, s.c, s.h, s.w, ++seed);
          const TransformOptions f32 = make_options(s, round, normalize, DType::f32, format);
          const TransformOptions f16 = make_options(s, round, normalize, DType::f16, format);
          Generator gen(seed);
          const TransformGeometry g = transform_geometry(f32, s.h, s.w, s.c);
          const std::vector<CropFlip> params = draw_crop_flips(f32, g, s.n, gen);
          int64_t near_ties = 0;
          const std::vector<double> bound = general_f32_bound(images, params, f32, near_ties);
          total_near_ties += near_ties;
          total_values += static_cast<int64_t>(bound.size());

          const std::vector<float> cpu = as_floats(apply_transform(images, params, f32));
          const std::vector<float> gpu = as_floats(gpu_transform(images, params, f32));
          const std::vector<double> expected(cpu.begin(), cpu.end());
          test::check_within(gpu, expected, bound, "f32");

          const std::vector<float> gpu16 = as_floats(gpu_transform(images, params, f16));
          test::check_within(gpu16, expected, test::half_output_bound(expected, bound),
                             "f16 against the CPU's f32 values");
          if (round) {  // away from ties: the same level, rounded once to f16 on both sides
            const std::vector<float> cpu16 = as_floats(apply_transform(images, params, f16));
            std::vector<double> same_level(bound.size());
            for (size_t k = 0; k < bound.size(); ++k) same_level[k] = bound[k] == 0.0 ? 0.0 : 1.0;
            test::check_within(gpu16, std::vector<double>(cpu16.begin(), cpu16.end()), same_level,
                               "f16 against the CPU's f16 away from ties");
          }
        }
      }
    }
  }
  MESSAGE("values near a rounding tie (allowed one level apart): " << total_near_ties << " of "
                                                                   << total_values);
}

TEST_CASE("cuda transform: argument errors") {
  test::skip_unless_cuda_device();
  const TransformOptions options = TransformOptions::reference_train();
  const Tensor cpu_images = random_batch(2, 3, 32, 32, 1);
  Tensor out = empty({2, 3, 224, 224}, TensorOptions(DType::f32).with_device(Device::cuda(0)));
  DeviceBuffer<CropFlip> params(2);
  CHECK_THROWS_WITH_AS(cuda::apply_transform_cuda(cpu_images, params.data(), options, out),
                       doctest::Contains("dense channels_last on a CUDA device"),
                       std::invalid_argument);
  Tensor device_images = empty({2, 3, 32, 32}, TensorOptions(DType::u8)
                                                   .with_device(Device::cuda(0))
                                                   .with_format(MemoryFormat::channels_last));
  Tensor wrong = empty({2, 3, 225, 224}, TensorOptions(DType::f32).with_device(Device::cuda(0)));
  CHECK_THROWS_WITH_AS(cuda::apply_transform_cuda(device_images, params.data(), options, wrong),
                       doctest::Contains("the output must be [2, 3, 224, 224] f32"),
                       std::invalid_argument);
  TransformOptions f64 = options;
  f64.dtype = DType::f64;
  CHECK_THROWS_WITH_AS(cuda::apply_transform_cuda(device_images, params.data(), f64, out),
                       doctest::Contains("is not f32 or f16"), std::invalid_argument);
  const TransformGeometry g = transform_geometry(options, 32, 32, 3);
  CHECK_THROWS_WITH_AS(
      cuda::transform_batch(static_cast<const uint8_t*>(device_images.data_ptr()), params.data(), 2,
                            g, {0.5f}, {0.5f}, static_cast<float*>(out.data_ptr()),
                            MemoryFormat::contiguous, cuda::compute_stream(0)),
      doctest::Contains("one value per channel (3), got 1 and 1"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(cuda::transform_batch(nullptr, params.data(), 2, g, {}, {},
                                             static_cast<float*>(out.data_ptr()),
                                             MemoryFormat::contiguous, cuda::compute_stream(0)),
                       doctest::Contains("images is null"), std::invalid_argument);
}

TEST_CASE("pinned buffer: upload round trip, reuse, move and errors") {
  test::skip_unless_cuda_device();
  const cuda::Stream stream = cuda::compute_stream(0);
  CHECK_THROWS_AS(cuda::PinnedBuffer(0, 0), std::invalid_argument);

  const size_t size = (8u << 20) + 123;  // 8 MiB and an odd tail
  cuda::PinnedBuffer buffer(size, 0);
  REQUIRE(!buffer.empty());
  CHECK(buffer.size() == size);
  CHECK(buffer.device() == 0);
  CHECK(buffer.reusable());  // nothing uploaded yet
  for (size_t i = 0; i < size; ++i) buffer.bytes()[i] = static_cast<uint8_t>(i * 7 + 3);

  // Two rounds through the same buffer, as the double buffering does: fill,
  // upload, wait until reusable, refill, upload again.
  for (int round = 0; round < 2; ++round) {
    CAPTURE(round);
    const size_t offset = round == 0 ? 0 : 1001;
    const size_t count = size - offset - 17;
    DeviceBuffer<uint8_t> device(static_cast<int64_t>(count));
    device.poison();
    buffer.upload(device.data(), count, stream, offset);
    buffer.wait_until_reusable();
    CHECK(buffer.reusable());
    const std::vector<uint8_t> back = device.download();
    REQUIRE(back.size() == count);
    CHECK(std::memcmp(back.data(), buffer.bytes() + offset, count) == 0);
    for (size_t i = 0; i < size; ++i) buffer.bytes()[i] = static_cast<uint8_t>(i * 13 + round);
  }

  // Moving hands over the memory and the event.
  void* data = buffer.data();
  cuda::PinnedBuffer moved(std::move(buffer));
  CHECK(buffer.empty());  // NOLINT(bugprone-use-after-move): the moved-from state is specified
  CHECK(buffer.size() == 0);
  CHECK(moved.data() == data);
  CHECK(moved.size() == size);
  cuda::PinnedBuffer assigned;
  assigned = std::move(moved);
  CHECK(moved.empty());  // NOLINT(bugprone-use-after-move)
  CHECK(assigned.data() == data);

  DeviceBuffer<uint8_t> small(16);
  CHECK_THROWS_WITH_AS(assigned.upload(small.data(), 16, stream, size - 8),
                       doctest::Contains("outside the buffer"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(assigned.upload(small.data(), 16, cuda::Stream{1, nullptr}),
                       doctest::Contains("the stream is on cuda:1"), std::invalid_argument);
  CHECK_THROWS_AS(moved.upload(small.data(), 16, stream), std::logic_error);
  assigned.upload(small.data(), 0, stream);  // nothing to copy: fine
  assigned.wait_until_reusable();
}

TEST_CASE("DeviceBatches: the CPU pipeline's batches, labels and order, on the device") {
  test::skip_unless_cuda_device();
  auto dataset = std::make_shared<SyntheticDataset>(20, ImageShape{32, 32, 3}, 10, 3);
  LoaderOptions loader;
  loader.batch_size = 6;  // 6, 6, 6 and a last batch of 2
  loader.shuffle = true;
  loader.drop_last = false;
  loader.seed = 11;
  loader.num_workers = 1;

  struct Variant {
    TransformOptions transform;
    const char* what;
  };
  TransformOptions train = TransformOptions::reference_train();
  train.horizontal_flip = true;
  train.dtype = DType::f32;
  train.format = MemoryFormat::channels_last;
  TransformOptions eval = TransformOptions::reference_eval();
  eval.mean = {0.485, 0.456, 0.406};
  eval.std = {0.229, 0.224, 0.225};
  eval.dtype = DType::f16;
  eval.format = MemoryFormat::contiguous;
  TransformOptions small = train;  // no resize: 32x32 random crops of 28, f16 NHWC
  small.resize = 0;
  small.crop = 28;
  small.dtype = DType::f16;
  const Variant variants[] = {
      {train, "train f32 NHWC"}, {eval, "eval f16 NCHW normalized"}, {small, "crop 28 f16 NHWC"}};

  for (const Variant& variant : variants) {
    CAPTURE(variant.what);
    LoaderBatchSource cpu(dataset, loader, variant.transform, 5);
    TransformOptions on_gpu = variant.transform;
    on_gpu.device = Device::cuda(0);
    DeviceBatches gpu(std::make_unique<RawLoaderBatches>(dataset, loader), on_gpu, 5);
    CHECK(gpu.batches_per_epoch() == cpu.batches_per_epoch());
    for (int64_t epoch = 0; epoch < 2; ++epoch) {
      CAPTURE(epoch);
      cpu.start_epoch(epoch);
      gpu.start_epoch(epoch);
      int64_t batches = 0;
      while (std::optional<LabeledBatch> expected = cpu.next()) {
        CAPTURE(batches);
        std::optional<LabeledBatch> got = gpu.next();
        REQUIRE(got.has_value());
        CHECK(got->images.device() == Device::cuda(0));
        CHECK(got->images.dtype() == variant.transform.dtype);
        CHECK(got->images.shape() == expected->images.shape());
        CHECK(got->images.is_contiguous(variant.transform.format));
        CHECK(got->labels.device() == Device::cuda(0));
        CHECK(got->labels.dtype() == DType::i64);
        CHECK(got->labels.to(Device::cpu()).to_doubles() == expected->labels.to_doubles());
        // The reference geometries blend exactly (see the top): equal bits.
        const std::vector<double> want = expected->images.to_doubles();
        const std::vector<float> have = as_floats(got->images.to(Device::cpu()));
        test::check_within(have, want, std::vector<double>(want.size(), 0.0), "images");
        ++batches;
      }
      CHECK(!gpu.next().has_value());
      CHECK(batches == 4);
    }
  }
}

TEST_CASE("DeviceBatches: argument errors") {
  test::skip_unless_cuda_device();
  TransformOptions on_gpu = TransformOptions::reference_train();
  on_gpu.device = Device::cuda(0);
  auto dataset = std::make_shared<SyntheticDataset>(4, ImageShape{32, 32, 3}, 10, 3);
  LoaderOptions loader;
  loader.batch_size = 2;
  loader.num_workers = 0;
  CHECK_THROWS_WITH_AS(DeviceBatches(nullptr, on_gpu), doctest::Contains("the source is null"),
                       std::invalid_argument);
  TransformOptions on_cpu = TransformOptions::reference_train();
  CHECK_THROWS_WITH_AS(DeviceBatches(std::make_unique<RawLoaderBatches>(dataset, loader), on_cpu),
                       doctest::Contains("transforms on a CUDA device"), std::invalid_argument);
  TransformOptions f64 = on_gpu;
  f64.dtype = DType::f64;
  CHECK_THROWS_WITH_AS(DeviceBatches(std::make_unique<RawLoaderBatches>(dataset, loader), f64),
                       doctest::Contains("is not f32 or f16"), std::invalid_argument);

  // A source of float images (an already transformed batch) is refused at next().
  std::vector<LabeledBatch> floats{{zeros({2, 3, 32, 32}), zeros({2}, DType::i64)}};
  DeviceBatches wrong_images(std::make_unique<FixedBatches>(floats), on_gpu);
  wrong_images.start_epoch(0);
  CHECK_THROWS_WITH_AS(wrong_images.next(), doctest::Contains("uint8 images [N, C, H, W]"),
                       std::invalid_argument);
  std::vector<LabeledBatch> bad_labels{{zeros({2, 3, 32, 32}, DType::u8), zeros({3}, DType::i64)}};
  DeviceBatches wrong_labels(std::make_unique<FixedBatches>(bad_labels), on_gpu);
  wrong_labels.start_epoch(0);
  CHECK_THROWS_WITH_AS(wrong_labels.next(), doctest::Contains("i64 labels [2]"),
                       std::invalid_argument);
}
