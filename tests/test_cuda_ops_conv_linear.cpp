// The Tensor-level CUDA paths of conv2d, linear, cross_entropy and dropout,
// with autograd, against the CPU path on the same values: f32 on both
// devices, f16 (autocast for conv2d and linear, f16 logits for
// cross_entropy, an f16 input for dropout) against a double-precision CPU run
// on the f16-rounded values. Both memory formats, batch 1 and 3 (127 for the
// 2-D ops), channels that are not multiples of 8, spatial 7x7 and 1x1.
// Every case skips (exit 77) without a CUDA device.
//
// Tolerances.
// f32, the project's bounds, as max over elements of |a - b| / max(|b|, 1)
// (test::max_relative_error, b the CPU result): 1e-5 for outputs, 1e-4 for
// gradients. Inputs are N(0, 1) and weights N(0, 1/fan_in), as after
// initialization, so outputs are O(1). Both devices sum the same products in
// f32 in different orders (CPU GEMMs; cuDNN/cuBLAS with FMA, no TF32): a
// length-K sum errs by at most K * 2^-24 * S (S the sum of |products|), and
// random-sign rounding errors grow like sqrt(K): with K <= 1000 and S <= ~10
// that is a few 1e-6 at most for the outputs; gradients sum up to 127 * 49
// products (backward filter over N * Ho * Wo) and get the 10x looser bound.
// cross_entropy's CPU path sums in double and rounds once; the kernel works
// in f32: the loss errs by a few 2^-24 per row, relative; the gradient
// (softmax - onehot) * g / N, with g = N so that it is O(1), by a few 2^-24
// times the row's logsumexp error (sum of K exponentials: sqrt(K) 2^-24).
// Dropout is exact: the same mask (same generator, same draws), one IEEE
// multiply on either device.
//
// f16 (u = 2^-11, f16's unit roundoff). The reference is the CPU path in
// double on exactly the f16 values the GPU reads, so input rounding is no
// error; S is the same computation on |x|, |w|, |b|, |g| (per element: the
// sum of |products| behind it, the scale of every rounding inside the sum).
//   conv2d: products of f16 values are exact in f32 and summed in f32 (at
//     most K 2^-24 S, K <= 25 * 13, i.e. < 0.1 u S); the result is rounded to
//     f16 (u |ref|); with a bias, cuDNN rounds the convolution to f16 before
//     adding the bias and rounds again (u S more); some cuDNN algorithms keep
//     transformed tiles or partial sums in f16 (Winograd, FFT: about one more
//     f16 rounding at the scale of S, 2 u S allowed, as in
//     tests/test_cuda_conv2d.cpp): |a - ref| <= u (|ref| + 3 S) + 2^-24.
//   linear: cuBLAS with f32 accumulation and no reduced-precision reduction,
//     bias added in f32 (beta = 1), one rounding to f16: f32 sum error at
//     most K 2^-24 S with K <= 1000 (< 0.13 u S), so
//     |a - ref| <= u (|ref| + S) + 2^-24.
//   The 2^-24 absolute term covers f16's subnormal rounding (2^-25) near 0.
//   cross_entropy with f16 logits: the loss is computed in f32 from the f16
//     values (bound as for f32, 1e-5); the gradient is computed in f32 (1e-4
//     as above) and rounded once to f16 (test::half_output_bound).
//   dropout: the GPU draws its mask from Philox (tensor/philox.h), so the
//     reference is that mask computed on the host; f32 is then one IEEE
//     multiply per element (exact agreement), f16 one f32 multiply rounded
//     once to f16 (exact agreement too).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "layers/conv2d.h"
#include "layers/dropout.h"
#include "layers/linear.h"
#include "layers/loss.h"
#include "tensor/autocast.h"
#include "tensor/half.h"
#include "tensor/philox.h"
#include "tensor/random.h"
#include "tests/support/cuda.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

const Device kCuda = Device::cuda(0);
constexpr double kOutputBound = 1e-5;                // f32, relative to max(|cpu|, 1)
constexpr double kGradientBound = 1e-4;              // f32, relative to max(|cpu|, 1)
constexpr double kAbsoluteFloor = 1.0 / 16777216.0;  // 2^-24

// Leaves that require grad: the CPU tensor itself and its copy on the GPU.
struct LeafPair {
  Tensor cpu;
  Tensor gpu;
};

LeafPair leaves(const Tensor& host) {
  LeafPair pair;
  pair.gpu = host.detach().to(kCuda);
  pair.gpu.set_requires_grad(true);
  pair.cpu = host.detach();
  pair.cpu.set_requires_grad(true);
  return pair;
}

MemoryFormat layout_of(const Tensor& t) {
  return t.dim() == 4 ? t.suggest_memory_format() : MemoryFormat::contiguous;
}

// t's values (downloaded when on the GPU) through fn, as an f64 CPU tensor
// in t's layout.
Tensor map_values(const Tensor& t, double (*fn)(double)) {
  std::vector<double> values = t.to_doubles();
  for (double& v : values) v = fn(v);
  return from_doubles(values, t.shape(), TensorOptions(DType::f64).with_format(layout_of(t)));
}

double round_to_half(double v) { return static_cast<float>(Half(static_cast<float>(v))); }
double absolute(double v) { return std::abs(v); }

// An f64 CPU leaf holding t's values rounded to f16 (what an f16 kernel reads).
Tensor half_rounded_leaf(const Tensor& t) {
  Tensor out = map_values(t, round_to_half);
  out.set_requires_grad(true);
  return out;
}

// An f64 CPU leaf holding |t|.
Tensor absolute_leaf(const Tensor& t) {
  Tensor out = map_values(t, absolute);
  out.set_requires_grad(true);
  return out;
}

std::vector<float> as_floats(const Tensor& t) {
  const std::vector<double> values = t.to_doubles();
  return std::vector<float>(values.begin(), values.end());
}

void check_relative(const Tensor& gpu, const Tensor& cpu, double bound, const std::string& what) {
  REQUIRE(gpu.defined());
  REQUIRE(cpu.defined());
  CHECK(gpu.device().is_cuda());
  CHECK(gpu.shape() == cpu.shape());
  const double error = test::max_relative_error(gpu, cpu);
  INFO(what << ": max |gpu - cpu| / max(|cpu|, 1) = " << error << ", bound " << bound);
  CHECK(error <= bound);
}

// |gpu - reference| <= 2^-11 (|reference| + s_factor * S) + 2^-24 per element,
// with S = `magnitude` (the sum of |products| behind each element).
void check_half(const Tensor& gpu, const Tensor& reference, const Tensor& magnitude,
                double s_factor, const std::string& what) {
  REQUIRE(gpu.defined());
  CHECK(gpu.device().is_cuda());
  REQUIRE(gpu.shape() == reference.shape());
  const std::vector<double> expected = reference.to_doubles();
  const std::vector<double> scale = magnitude.to_doubles();
  std::vector<double> bound(expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    bound[i] =
        test::kHalfUnitRoundoff * (std::abs(expected[i]) + s_factor * scale[i]) + kAbsoluteFloor;
  }
  test::check_within(as_floats(gpu), expected, bound, what);
}

// ------------------------------------------------------------- conv2d --

struct ConvCase {
  const char* name;
  int64_t batch, in_channels, out_channels, size, kernel, stride, padding, groups;
};

const ConvCase kConvCases[] = {
    {"regular 3x3 stride 1", 3, 5, 12, 7, 3, 1, 1, 1},
    {"regular 3x3 stride 2", 1, 3, 16, 7, 3, 2, 1, 1},
    {"regular 3x3 stride 2, batch 3", 3, 13, 11, 7, 3, 2, 1, 1},
    {"depthwise 3x3 stride 1", 3, 13, 13, 7, 3, 1, 1, 13},
    {"depthwise 3x3 stride 2", 1, 20, 20, 7, 3, 2, 1, 20},
    {"depthwise 5x5 stride 1", 3, 13, 13, 7, 5, 1, 2, 13},
    {"depthwise 5x5 stride 2", 1, 24, 24, 7, 5, 2, 2, 24},
    {"depthwise 3x3 on 1x1", 3, 13, 13, 1, 3, 1, 1, 13},
    {"pointwise 1x1", 3, 20, 12, 7, 1, 1, 0, 1},
    {"pointwise 1x1 on 1x1 (squeeze-excite)", 3, 20, 12, 1, 1, 1, 0, 1},
    {"pointwise 1x1, batch 1", 1, 12, 20, 7, 1, 1, 0, 1},
};

struct ConvTensors {
  Tensor x, w, b, g;  // f32 CPU tensors; b undefined without bias
};

ConvTensors conv_tensors(const ConvCase& c, bool with_bias, MemoryFormat format, uint64_t seed) {
  Generator gen(seed);
  ConvTensors t;
  const int64_t group_in = c.in_channels / c.groups;
  const double fan_in = static_cast<double>(group_in * c.kernel * c.kernel);
  t.x = test::random_tensor({c.batch, c.in_channels, c.size, c.size}, gen, DType::f32, format);
  t.w = test::random_tensor({c.out_channels, group_in, c.kernel, c.kernel}, gen, DType::f32,
                            MemoryFormat::contiguous, 1.0 / std::sqrt(fan_in));
  if (with_bias) {
    t.b = test::random_tensor({c.out_channels}, gen, DType::f32, MemoryFormat::contiguous, 0.5);
  }
  const int64_t out_size = (c.size + 2 * c.padding - c.kernel) / c.stride + 1;
  t.g = test::random_tensor({c.batch, c.out_channels, out_size, out_size}, gen, DType::f32, format);
  return t;
}

// --------------------------------------------------------------- linear --

struct LinearCase {
  int64_t batch, in_features, out_features;
};

const LinearCase kLinearCases[] = {{1, 37, 10}, {3, 37, 10}, {127, 96, 10}, {3, 16, 1000}};

}  // namespace

TEST_CASE("cuda conv2d: f32 forward and backward match the CPU, both formats") {
  test::skip_unless_cuda_device();
  uint64_t seed = 100;
  for (const ConvCase& c : kConvCases) {
    for (bool with_bias : {true, false}) {
      for (MemoryFormat format : test::both_formats()) {
        CAPTURE(c.name);
        CAPTURE(with_bias);
        CAPTURE(memory_format_name(format));
        const ConvTensors t = conv_tensors(c, with_bias, format, ++seed);
        const LeafPair x = leaves(t.x), w = leaves(t.w);
        const LeafPair b = with_bias ? leaves(t.b) : LeafPair{};

        const Tensor y_cpu = conv2d(x.cpu, w.cpu, b.cpu, c.stride, c.padding, c.groups);
        const Tensor y_gpu = conv2d(x.gpu, w.gpu, b.gpu, c.stride, c.padding, c.groups);
        CHECK(y_gpu.dtype() == DType::f32);
        CHECK(y_gpu.suggest_memory_format() == y_cpu.suggest_memory_format());  // the input's
        check_relative(y_gpu, y_cpu, kOutputBound, "conv2d output");

        y_cpu.backward(t.g);
        y_gpu.backward(t.g.to(kCuda));
        check_relative(x.gpu.grad(), x.cpu.grad(), kGradientBound, "conv2d grad input");
        check_relative(w.gpu.grad(), w.cpu.grad(), kGradientBound, "conv2d grad weight");
        if (with_bias) {
          check_relative(b.gpu.grad(), b.cpu.grad(), kGradientBound, "conv2d grad bias");
        }
      }
    }
  }
}

TEST_CASE("cuda conv2d: only the input needs a gradient, or none does") {
  test::skip_unless_cuda_device();
  const ConvCase& c = kConvCases[0];
  for (MemoryFormat format : test::both_formats()) {
    CAPTURE(memory_format_name(format));
    const ConvTensors t = conv_tensors(c, true, format, 7);
    const LeafPair x = leaves(t.x);
    const Tensor w_gpu = t.w.to(kCuda), b_gpu = t.b.to(kCuda);
    const Tensor y_cpu = conv2d(x.cpu, t.w, t.b, c.stride, c.padding, c.groups);
    const Tensor y_gpu = conv2d(x.gpu, w_gpu, b_gpu, c.stride, c.padding, c.groups);
    y_cpu.backward(t.g);
    y_gpu.backward(t.g.to(kCuda));
    check_relative(x.gpu.grad(), x.cpu.grad(), kGradientBound, "conv2d grad input");
    CHECK_FALSE(w_gpu.grad().defined());

    const Tensor y_plain = conv2d(t.x.to(kCuda), w_gpu, b_gpu, c.stride, c.padding, c.groups);
    CHECK_FALSE(y_plain.requires_grad());
    check_relative(y_plain, y_cpu, kOutputBound, "conv2d output without autograd");
  }
}

TEST_CASE("cuda conv2d: f16 under autocast, against double on the f16 values") {
  test::skip_unless_cuda_device();
  uint64_t seed = 200;
  for (const ConvCase& c : kConvCases) {
    for (bool with_bias : {true, false}) {
      for (MemoryFormat format : test::both_formats()) {
        CAPTURE(c.name);
        CAPTURE(with_bias);
        CAPTURE(memory_format_name(format));
        const ConvTensors t = conv_tensors(c, with_bias, format, ++seed);
        const LeafPair x = leaves(t.x), w = leaves(t.w);
        const LeafPair b = with_bias ? leaves(t.b) : LeafPair{};

        Tensor y_gpu;
        {
          AutocastGuard autocast;
          y_gpu = conv2d(x.gpu, w.gpu, b.gpu, c.stride, c.padding, c.groups);
        }
        CHECK(y_gpu.dtype() == DType::f16);
        const Tensor g16 = t.g.to(kCuda).to(DType::f16);
        y_gpu.backward(g16);
        // The f32 leaves receive f32 gradients (the recorded casts convert them).
        CHECK(x.gpu.grad().dtype() == DType::f32);
        CHECK(w.gpu.grad().dtype() == DType::f32);

        // Reference: double on the f16-rounded values; magnitudes: the same on |.|.
        const Tensor xr = half_rounded_leaf(t.x), wr = half_rounded_leaf(t.w);
        const Tensor br = with_bias ? half_rounded_leaf(t.b) : Tensor();
        const Tensor gr = map_values(g16, [](double v) { return v; });
        const Tensor yr = conv2d(xr, wr, br, c.stride, c.padding, c.groups);
        yr.backward(gr);
        const Tensor xa = absolute_leaf(xr), wa = absolute_leaf(wr);
        const Tensor ba = with_bias ? absolute_leaf(br) : Tensor();
        const Tensor ya = conv2d(xa, wa, ba, c.stride, c.padding, c.groups);
        ya.backward(map_values(gr, absolute));

        check_half(y_gpu, yr, ya, 3.0, "conv2d f16 output");
        check_half(x.gpu.grad(), xr.grad(), xa.grad(), 3.0, "conv2d f16 grad input");
        check_half(w.gpu.grad(), wr.grad(), wa.grad(), 3.0, "conv2d f16 grad weight");
        if (with_bias) {
          check_half(b.gpu.grad(), br.grad(), ba.grad(), 3.0, "conv2d f16 grad bias");
        }
      }
    }
  }
}

TEST_CASE("cuda conv2d: wrong devices and dtypes are refused with clear messages") {
  test::skip_unless_cuda_device();
  Generator gen(3);
  const Tensor x = test::random_tensor({1, 4, 5, 5}, gen, DType::f32).to(kCuda);
  const Tensor w_cpu = test::random_tensor({6, 4, 3, 3}, gen, DType::f32);
  CHECK_THROWS_WITH_AS(conv2d(x, w_cpu, Tensor()),
                       doctest::Contains("expected every tensor on a CUDA device"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(conv2d(x.to(DType::f16), w_cpu.to(kCuda), Tensor()),
                       doctest::Contains("differs from input dtype"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(conv2d(x, w_cpu.to(kCuda), Tensor(), 1, 0, 2),
                       doctest::Contains("input has 4 channels, weight expects 8"),
                       std::invalid_argument);
}

TEST_CASE("cuda linear: f32 forward and backward match the CPU") {
  test::skip_unless_cuda_device();
  uint64_t seed = 300;
  for (const LinearCase& c : kLinearCases) {
    for (bool with_bias : {true, false}) {
      CAPTURE(c.batch);
      CAPTURE(c.in_features);
      CAPTURE(c.out_features);
      CAPTURE(with_bias);
      Generator gen(++seed);
      const Tensor xh = test::random_tensor({c.batch, c.in_features}, gen, DType::f32);
      const Tensor wh =
          test::random_tensor({c.out_features, c.in_features}, gen, DType::f32,
                              MemoryFormat::contiguous, 1.0 / std::sqrt(double(c.in_features)));
      const Tensor bh =
          test::random_tensor({c.out_features}, gen, DType::f32, MemoryFormat::contiguous, 0.5);
      const Tensor gh = test::random_tensor({c.batch, c.out_features}, gen, DType::f32);
      const LeafPair x = leaves(xh), w = leaves(wh);
      const LeafPair b = with_bias ? leaves(bh) : LeafPair{};

      const Tensor y_cpu = linear(x.cpu, w.cpu, b.cpu);
      const Tensor y_gpu = linear(x.gpu, w.gpu, b.gpu);
      CHECK(y_gpu.dtype() == DType::f32);
      check_relative(y_gpu, y_cpu, kOutputBound, "linear output");
      y_cpu.backward(gh);
      y_gpu.backward(gh.to(kCuda));
      check_relative(x.gpu.grad(), x.cpu.grad(), kGradientBound, "linear grad input");
      check_relative(w.gpu.grad(), w.cpu.grad(), kGradientBound, "linear grad weight");
      if (with_bias) {
        check_relative(b.gpu.grad(), b.cpu.grad(), kGradientBound, "linear grad bias");
      }
    }
  }
}

TEST_CASE("cuda linear: f16 under autocast, against double on the f16 values") {
  test::skip_unless_cuda_device();
  uint64_t seed = 400;
  for (const LinearCase& c : kLinearCases) {
    for (bool with_bias : {true, false}) {
      CAPTURE(c.batch);
      CAPTURE(c.in_features);
      CAPTURE(c.out_features);
      CAPTURE(with_bias);
      Generator gen(++seed);
      const Tensor xh = test::random_tensor({c.batch, c.in_features}, gen, DType::f32);
      const Tensor wh =
          test::random_tensor({c.out_features, c.in_features}, gen, DType::f32,
                              MemoryFormat::contiguous, 1.0 / std::sqrt(double(c.in_features)));
      const Tensor bh =
          test::random_tensor({c.out_features}, gen, DType::f32, MemoryFormat::contiguous, 0.5);
      const Tensor gh = test::random_tensor({c.batch, c.out_features}, gen, DType::f32);
      const LeafPair x = leaves(xh), w = leaves(wh);
      const LeafPair b = with_bias ? leaves(bh) : LeafPair{};

      Tensor y_gpu;
      {
        AutocastGuard autocast;
        y_gpu = linear(x.gpu, w.gpu, b.gpu);
      }
      CHECK(y_gpu.dtype() == DType::f16);
      const Tensor g16 = gh.to(kCuda).to(DType::f16);
      y_gpu.backward(g16);
      CHECK(w.gpu.grad().dtype() == DType::f32);

      const Tensor xr = half_rounded_leaf(xh), wr = half_rounded_leaf(wh);
      const Tensor br = with_bias ? half_rounded_leaf(bh) : Tensor();
      const Tensor gr = map_values(g16, [](double v) { return v; });
      const Tensor yr = linear(xr, wr, br);
      yr.backward(gr);
      const Tensor xa = absolute_leaf(xr), wa = absolute_leaf(wr);
      const Tensor ba = with_bias ? absolute_leaf(br) : Tensor();
      const Tensor ya = linear(xa, wa, ba);
      ya.backward(map_values(gr, absolute));

      check_half(y_gpu, yr, ya, 1.0, "linear f16 output");
      check_half(x.gpu.grad(), xr.grad(), xa.grad(), 1.0, "linear f16 grad input");
      check_half(w.gpu.grad(), wr.grad(), wa.grad(), 1.0, "linear f16 grad weight");
      if (with_bias) check_half(b.gpu.grad(), br.grad(), ba.grad(), 1.0, "linear f16 grad bias");
    }
  }
}

TEST_CASE("cuda linear: wrong devices and dtypes are refused with clear messages") {
  test::skip_unless_cuda_device();
  Generator gen(4);
  const Tensor x = test::random_tensor({3, 8}, gen, DType::f32).to(kCuda);
  const Tensor w = test::random_tensor({5, 8}, gen, DType::f32);
  CHECK_THROWS_WITH_AS(linear(x, w), doctest::Contains("expected every tensor on a CUDA device"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(linear(x.to(DType::f16), w.to(kCuda)), doctest::Contains("dtypes differ"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(linear(x, w.to(kCuda).narrow(1, 0, 7)),
                       doctest::Contains("input has 8 features, weight expects 7"),
                       std::invalid_argument);
}

// -------------------------------------------------------- cross_entropy --

namespace {

struct LossCase {
  int64_t batch, classes;
};

const LossCase kLossCases[] = {{1, 10}, {3, 10}, {127, 10}, {3, 1}, {3, 1000}, {127, 1000}};

// Class indices uniform in [0, classes), as i64 CPU values.
std::vector<double> random_targets(int64_t batch, int64_t classes, Generator& gen) {
  std::vector<double> targets(static_cast<size_t>(batch));
  for (double& t : targets) t = std::floor(gen.uniform() * static_cast<double>(classes));
  return targets;
}

// The three ways targets arrive: i64 on the CPU (checked and uploaded by the
// op), i64 and i32 already on the GPU.
struct TargetKind {
  const char* name;
  DType dtype;
  bool on_gpu;
};
const TargetKind kTargetKinds[] = {
    {"i64 cpu", DType::i64, false}, {"i64 gpu", DType::i64, true}, {"i32 gpu", DType::i32, true}};

Tensor make_targets(const std::vector<double>& values, const TargetKind& kind) {
  const Tensor host = from_doubles(values, {static_cast<int64_t>(values.size())}, kind.dtype);
  return kind.on_gpu ? host.to(kCuda) : host;
}

}  // namespace

TEST_CASE("cuda cross_entropy: f32 loss and gradient match the CPU") {
  test::skip_unless_cuda_device();
  uint64_t seed = 500;
  for (const LossCase& c : kLossCases) {
    for (const TargetKind& kind : kTargetKinds) {
      CAPTURE(c.batch);
      CAPTURE(c.classes);
      CAPTURE(kind.name);
      Generator gen(++seed);
      const Tensor zh =
          test::random_tensor({c.batch, c.classes}, gen, DType::f32, MemoryFormat::contiguous, 3.0);
      const std::vector<double> targets = random_targets(c.batch, c.classes, gen);
      const LeafPair z = leaves(zh);
      const Tensor loss_cpu = cross_entropy(z.cpu, from_doubles(targets, {c.batch}, DType::i64));
      const Tensor loss_gpu = cross_entropy(z.gpu, make_targets(targets, kind));
      CHECK(loss_gpu.dim() == 0);
      CHECK(loss_gpu.dtype() == DType::f32);
      check_relative(loss_gpu, loss_cpu, kOutputBound, "cross_entropy loss");

      // g = N makes the gradient softmax - onehot, O(1), so the bound bites.
      const double g = static_cast<double>(c.batch);
      loss_cpu.backward(full({}, g, DType::f32));
      loss_gpu.backward(full({}, g, TensorOptions(DType::f32).with_device(kCuda)));
      check_relative(z.gpu.grad(), z.cpu.grad(), kGradientBound, "cross_entropy grad logits");
    }
  }
}

TEST_CASE("cuda cross_entropy: backward() with the default gradient of one") {
  test::skip_unless_cuda_device();
  Generator gen(9);
  const Tensor zh = test::random_tensor({5, 7}, gen, DType::f32, MemoryFormat::contiguous, 3.0);
  const Tensor targets = from_doubles(random_targets(5, 7, gen), {5}, DType::i64);
  const LeafPair z = leaves(zh);
  cross_entropy(z.cpu, targets).backward();
  cross_entropy(z.gpu, targets).backward();
  // Gradient elements are at most 1/N = 0.2 here: compare them scaled by N.
  const Tensor scaled_gpu = map_values(z.gpu.grad(), [](double v) { return 5.0 * v; });
  const Tensor scaled_cpu = map_values(z.cpu.grad(), [](double v) { return 5.0 * v; });
  CHECK(z.gpu.grad().device().is_cuda());
  CHECK(test::max_relative_error(scaled_gpu, scaled_cpu) <= kGradientBound);
}

TEST_CASE("cuda cross_entropy: f16 logits give an f32 loss and an f16 gradient") {
  test::skip_unless_cuda_device();
  uint64_t seed = 600;
  for (const LossCase& c : kLossCases) {
    for (const TargetKind& kind : kTargetKinds) {
      CAPTURE(c.batch);
      CAPTURE(c.classes);
      CAPTURE(kind.name);
      Generator gen(++seed);
      const Tensor zh =
          test::random_tensor({c.batch, c.classes}, gen, DType::f32, MemoryFormat::contiguous, 3.0);
      const std::vector<double> targets = random_targets(c.batch, c.classes, gen);
      Tensor z16 = zh.to(kCuda).to(DType::f16);
      z16.set_requires_grad(true);
      const Tensor loss_gpu = cross_entropy(z16, make_targets(targets, kind));
      CHECK(loss_gpu.dtype() == DType::f32);
      const double g = static_cast<double>(c.batch);
      loss_gpu.backward(full({}, g, TensorOptions(DType::f32).with_device(kCuda)));
      REQUIRE(z16.grad().defined());
      CHECK(z16.grad().dtype() == DType::f16);

      const Tensor zr = map_values(z16, [](double v) { return v; });  // exact f16 values
      Tensor zr_leaf = zr;
      zr_leaf.set_requires_grad(true);
      const Tensor loss_ref = cross_entropy(zr_leaf, from_doubles(targets, {c.batch}, DType::i64));
      loss_ref.backward(full({}, g, DType::f64));
      check_relative(loss_gpu, loss_ref, kOutputBound, "cross_entropy f16 loss");
      const std::vector<double> expected = zr_leaf.grad().to_doubles();
      test::check_within(
          as_floats(z16.grad()), expected,
          test::half_output_bound(expected, test::relative_bound(expected, kGradientBound)),
          "cross_entropy f16 grad logits");
    }
  }
}

TEST_CASE("cuda cross_entropy: targets from the CPU are range-checked") {
  test::skip_unless_cuda_device();
  Generator gen(10);
  const Tensor z = test::random_tensor({3, 4}, gen, DType::f32).to(kCuda);
  CHECK_THROWS_WITH_AS(cross_entropy(z, from_doubles({0, 4, 1}, {3}, DType::i64)),
                       doctest::Contains("target[1] = 4 is out of range for 4 classes"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(cross_entropy(z, from_doubles({0, -1, 1}, {3}, DType::i32)),
                       doctest::Contains("out of range"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(cross_entropy(z, from_doubles({0, 1}, {2}, DType::i64)),
                       doctest::Contains("target must be [3]"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      cross_entropy(z.to(Device::cpu()), from_doubles({0, 1, 2}, {3}, DType::i64).to(kCuda)),
      doctest::Contains("expected every tensor on a CUDA device"), std::invalid_argument);
}

// -------------------------------------------------------------- dropout --

namespace {

struct DropoutShape {
  Shape shape;
  MemoryFormat format;
};

const DropoutShape kDropoutShapes[] = {
    {{3, 13, 7, 7}, MemoryFormat::contiguous},    {{3, 13, 7, 7}, MemoryFormat::channels_last},
    {{1, 20, 7, 7}, MemoryFormat::channels_last}, {{3, 13, 1, 1}, MemoryFormat::channels_last},
    {{127, 96}, MemoryFormat::contiguous},
};

bool same_values(const Tensor& a, const std::vector<double>& expected) {
  return a.to_doubles() == expected;
}

// The mask CUDA dropout draws (layers/dropout.h): Philox under the key that
// is the generator's next 64-bit value, element i in logical order, the kept
// value 1/(1-p) in f32, rounded once more to f16 for an f16 input.
std::vector<double> philox_mask(int64_t n, double p, Generator& gen, bool half) {
  const uint64_t key = gen.next_u64();
  const uint32_t threshold = philox::drop_threshold(p);
  float kept = p < 1.0 ? static_cast<float>(1.0 / (1.0 - p)) : 0.0f;
  if (half) kept = static_cast<float>(Half(kept));
  std::vector<double> mask(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t word = philox::block_of(key, static_cast<uint64_t>(i / 4)).word[i % 4];
    mask[static_cast<size_t>(i)] = philox::keeps(word, threshold) ? kept : 0.0;
  }
  return mask;
}

// a[i] * mask[i] in f32 (one IEEE multiply, as the kernel), optionally
// rounded to f16.
std::vector<double> times_mask(const std::vector<double>& a, const std::vector<double>& mask,
                               bool half) {
  std::vector<double> out(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const float product = static_cast<float>(a[i]) * static_cast<float>(mask[i]);
    out[i] = half ? static_cast<float>(Half(product)) : product;
  }
  return out;
}

}  // namespace

TEST_CASE("cuda dropout: f32 multiplies by the Philox mask of the seed, in the input's layout") {
  test::skip_unless_cuda_device();
  uint64_t seed = 700;
  for (const DropoutShape& s : kDropoutShapes) {
    for (double p : {0.2, 0.5, 0.7, 1.0}) {
      CAPTURE(shape_str(s.shape));
      CAPTURE(memory_format_name(s.format));
      CAPTURE(p);
      Generator data(++seed);
      const Tensor xh = test::random_tensor(s.shape, data, DType::f32, s.format);
      const Tensor gh = test::random_tensor(s.shape, data, DType::f32, s.format);
      const LeafPair x = leaves(xh);
      Generator gen_gpu(seed * 31), gen_reference(seed * 31);
      const std::vector<double> mask = philox_mask(xh.numel(), p, gen_reference, false);
      const Tensor y_gpu = dropout(x.gpu, p, true, gen_gpu);
      CHECK(y_gpu.device().is_cuda());
      CHECK(y_gpu.strides() == x.gpu.strides());  // the input's layout
      CHECK(same_values(y_gpu, times_mask(xh.to_doubles(), mask, false)));
      // One draw from the generator per call, whatever the size.
      CHECK(gen_gpu.next_u64() == gen_reference.next_u64());

      y_gpu.backward(gh.to(kCuda));
      REQUIRE(x.gpu.grad().defined());
      CHECK(same_values(x.gpu.grad(), times_mask(gh.to_doubles(), mask, false)));
    }
  }
}

TEST_CASE("cuda dropout: the same seed gives the same mask, another seed another") {
  test::skip_unless_cuda_device();
  Generator data(5);
  const Tensor x = test::random_tensor({64, 1280}, data, DType::f32).to(kCuda);
  Generator a(1), b(1), c(2);
  const std::vector<double> ya = dropout(x, 0.2, true, a).to_doubles();
  CHECK(dropout(x, 0.2, true, b).to_doubles() == ya);
  CHECK(dropout(x, 0.2, true, c).to_doubles() != ya);
  // The next call of one generator draws a fresh mask.
  CHECK(dropout(x, 0.2, true, a).to_doubles() != ya);
  // Keep rate over 81,920 elements: 1 - p within 5 standard deviations.
  int64_t kept = 0;
  for (double v : ya) kept += v != 0.0 ? 1 : 0;
  const double n = static_cast<double>(ya.size());
  CHECK(std::abs(static_cast<double>(kept) / n - 0.8) <= 5.0 * std::sqrt(0.2 * 0.8 / n));
}

TEST_CASE("cuda dropout: f16 is x times the f16 mask, rounded once") {
  test::skip_unless_cuda_device();
  uint64_t seed = 800;
  for (const DropoutShape& s : kDropoutShapes) {
    for (double p : {0.2, 0.5}) {
      CAPTURE(shape_str(s.shape));
      CAPTURE(memory_format_name(s.format));
      CAPTURE(p);
      Generator data(++seed);
      // f32 CPU tensors holding f16 values.
      const Tensor xh =
          map_values(test::random_tensor(s.shape, data, DType::f32, s.format), round_to_half)
              .to(DType::f32);
      const Tensor gh =
          map_values(test::random_tensor(s.shape, data, DType::f32, s.format), round_to_half)
              .to(DType::f32);
      Tensor x16 = xh.to(kCuda).to(DType::f16);
      x16.set_requires_grad(true);
      Generator gen_gpu(seed * 17), gen_reference(seed * 17);
      const std::vector<double> mask = philox_mask(xh.numel(), p, gen_reference, true);
      const Tensor y_gpu = dropout(x16, p, true, gen_gpu);
      CHECK(y_gpu.dtype() == DType::f16);
      CHECK(same_values(y_gpu, times_mask(xh.to_doubles(), mask, true)));
      y_gpu.backward(gh.to(kCuda).to(DType::f16));
      REQUIRE(x16.grad().defined());
      CHECK(x16.grad().dtype() == DType::f16);
      CHECK(same_values(x16.grad(), times_mask(gh.to_doubles(), mask, true)));
    }
  }
}

TEST_CASE("cuda dropout: evaluation and p = 0 return the input itself") {
  test::skip_unless_cuda_device();
  Generator gen(12);
  const Tensor x = test::random_tensor({2, 3, 4, 5}, gen, DType::f32).to(kCuda);
  CHECK(dropout(x, 0.5, false, gen).is_same(x));
  CHECK(dropout(x, 0.0, true, gen).is_same(x));
}
