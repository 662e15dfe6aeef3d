// The Tensor-level CUDA paths of batch_norm2d (and the BatchNorm2d module),
// relu / hardsigmoid / hardswish, adaptive_avg_pool2d, channel_scale (and the
// SqueezeExcitation module), and Flatten on a CUDA tensor: each op on a CUDA
// device against the same op on the CPU, forward and backward through
// autograd (y.backward(g) with a random g, given in the OTHER memory format
// than the input so the backward has to realign it), both memory formats,
// batch 1 and 3, channels not a multiple of 8, spatial 1x1 and 7x7.
// Every case starts with skip_unless_cuda_device(): without a GPU it exits 77
// (CTest "Skipped").
//
// Tolerances (max over elements of |cuda - ref| / max(|ref|, 1), or the
// per-element bound of test::check_within where stated):
// - f32: outputs within 1e-5, gradients within 1e-4 of the CPU path (which
//   accumulates in double). The CUDA kernels compute in f32; the longest
//   reduction here is BatchNorm's M = N*H*W = 147 values per channel, whose
//   f32 rounding (2^-24 ~ 6e-8 per operation, growing at most linearly with
//   the length, in practice with its square root under the kernels' tree
//   combination) stays far below 1e-5 for O(1) data. Gradients go through one
//   or two such reductions more (BatchNorm's sum(g) and sum(g * (x - mean)),
//   channel_scale's sum over H*W), hence 1e-4.
// - f16 (activations, pooling and channel_scale in f16; BatchNorm with f16
//   input/output and f32 parameters and statistics): the reference is the
//   CPU path in f64 on exactly the f16 values the kernel reads (inputs and
//   grad_output are rounded to f16 first). The kernels convert f16 to f32
//   exactly, compute in f32 as for f32 data (so within the f32 tolerance tol
//   above: 1e-5 outputs, 1e-4 gradients, relative to max(|ref|, 1)), and
//   round each f16 result once, which moves it by at most 2^-11 of itself
//   (2^-25 below f16's normal range). Per element:
//     |cuda - ref| <= 2^-11 |ref| + (1 + 2^-11) * tol * max(|ref|, 1) + 2^-25
//   (test::half_output_bound). f32 results of an f16 input (BatchNorm's
//   weight/bias gradients and running statistics) are not rounded to f16 and
//   keep the f32 tolerance.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "layers/activations.h"
#include "layers/batchnorm2d.h"
#include "layers/flatten.h"
#include "layers/pooling.h"
#include "layers/squeeze_excite.h"
#include "tensor/ops.h"
#include "tensor/random.h"
#include "tests/support/cuda.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

constexpr double kOutputTolerance = 1e-5;    // f32 outputs, see the top of the file
constexpr double kGradientTolerance = 1e-4;  // f32 gradients

const Device kCuda = Device::cuda(0);

MemoryFormat other_format(MemoryFormat format) {
  return format == MemoryFormat::contiguous ? MemoryFormat::channels_last
                                            : MemoryFormat::contiguous;
}

// The values of any tensor (CPU or CUDA), in logical order.
std::vector<double> values_of(const Tensor& t) { return t.detach().to(Device::cpu()).to_doubles(); }

// max over elements of |actual - expected| / max(|expected|, 1); actual may be on CUDA.
double max_error(const Tensor& actual, const Tensor& expected) {
  REQUIRE(actual.defined());
  REQUIRE(expected.defined());
  REQUIRE(actual.shape() == expected.shape());
  return test::max_relative_error(actual.detach().to(Device::cpu()), values_of(expected));
}

// An f16 result against its f64 reference, per element within the bound
// derived at the top of the file from the f32 tolerance `f32_tolerance`.
void check_half(const Tensor& actual, const Tensor& expected, double f32_tolerance,
                const std::string& what) {
  REQUIRE(actual.defined());
  REQUIRE(expected.defined());
  REQUIRE(actual.shape() == expected.shape());
  CHECK(actual.dtype() == DType::f16);
  const std::vector<double> reference = values_of(expected);
  const std::vector<double> got = values_of(actual);
  const std::vector<float> got_f32(got.begin(), got.end());  // f16 values are exact in f32
  test::check_within(
      got_f32, reference,
      test::half_output_bound(reference, test::relative_bound(reference, f32_tolerance)), what);
}

// A CPU leaf requiring grad with `values` converted to `dtype`.
Tensor cpu_leaf(const Tensor& values, DType dtype) {
  Tensor t = values.detach().to(dtype).detach();
  t.set_requires_grad(true);
  return t;
}

// A CUDA leaf with `values` converted to `dtype` (on the host, so the f16
// values are exactly those of cpu_leaf(values, f16)), same memory format.
Tensor cuda_leaf(const Tensor& values, DType dtype, bool requires_grad = true) {
  Tensor t = values.detach().to(dtype).to(kCuda).detach();
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

// `values` as a CUDA tensor (no grad) in `dtype`.
Tensor to_cuda(const Tensor& values, DType dtype) { return cuda_leaf(values, dtype, false); }

// A CUDA result: on the device, of `dtype`, dense in `format`.
void check_placement(const Tensor& t, DType dtype, MemoryFormat format) {
  CHECK(t.device() == kCuda);
  CHECK(t.dtype() == dtype);
  CHECK(t.is_contiguous(format));
}

const std::vector<Shape>& activation_shapes() {
  static const std::vector<Shape> shapes{{1, 5, 7, 7}, {3, 13, 1, 1}, {3, 13, 7, 7}};
  return shapes;
}

struct ActivationCase {
  const char* name;
  Tensor (*fn)(const Tensor&);
};

const std::vector<ActivationCase>& activation_cases() {
  static const std::vector<ActivationCase> cases{
      {"relu", relu}, {"hardsigmoid", hardsigmoid}, {"hardswish", hardswish}};
  return cases;
}

// BatchNorm's per-channel tensors, as values (f32, CPU).
struct BatchNormValues {
  Tensor weight, bias, running_mean, running_var;
};

BatchNormValues batch_norm_values(int64_t channels, Generator& gen) {
  const Shape shape{channels};
  BatchNormValues v;
  v.weight =
      add(ones(shape), test::random_tensor(shape, gen, DType::f32, MemoryFormat::contiguous, 0.2));
  v.bias = test::random_tensor(shape, gen, DType::f32, MemoryFormat::contiguous, 0.3);
  v.running_mean = test::random_tensor(shape, gen, DType::f32, MemoryFormat::contiguous, 0.1);
  v.running_var =
      add(ones(shape), test::random_tensor(shape, gen, DType::f32, MemoryFormat::contiguous, 0.1));
  return v;
}

// Activation-like input: normal(0, 1.5) shifted by 0.5, so that centering matters.
Tensor batch_norm_input(const Shape& shape, Generator& gen, MemoryFormat format) {
  const Tensor noise = test::random_tensor(shape, gen, DType::f32, format, 1.5);
  return add(noise, full(shape, 0.5, TensorOptions(DType::f32).with_format(format)));
}

struct BatchNormCase {
  Shape shape;
  double momentum;
  double eps;
};

const std::vector<BatchNormCase>& batch_norm_cases() {
  static const std::vector<BatchNormCase> cases{{{3, 13, 7, 7}, 0.1, 1e-5},
                                                {{1, 6, 7, 7}, 0.01, 1e-3},
                                                {{2, 5, 1, 1}, 0.1, 1e-5},
                                                {{3, 13, 1, 1}, 0.01, 1e-3}};
  return cases;
}

}  // namespace

// ------------------------------------------------------------ activations --

TEST_CASE("CUDA relu, hardsigmoid, hardswish: f32 forward and backward match the CPU") {
  test::skip_unless_cuda_device();
  uint64_t seed = 100;
  for (const ActivationCase& op : activation_cases()) {
    for (const Shape& shape : activation_shapes()) {
      for (MemoryFormat format : test::both_formats()) {
        CAPTURE(op.name);
        CAPTURE(shape_str(shape));
        CAPTURE(memory_format_name(format));
        Generator gen(++seed);
        // Scale 4: every piece of hardsigmoid and hardswish (|x| > 3 and < 3).
        const Tensor values = test::random_tensor(shape, gen, DType::f32, format, 4.0);
        const Tensor g = test::random_tensor(shape, gen, DType::f32, other_format(format));

        Tensor x_cpu = cpu_leaf(values, DType::f32);
        Tensor y_cpu = op.fn(x_cpu);
        y_cpu.backward(g);

        Tensor x_gpu = cuda_leaf(values, DType::f32);
        Tensor y_gpu = op.fn(x_gpu);
        check_placement(y_gpu, DType::f32, format);
        CHECK(max_error(y_gpu, y_cpu) <= kOutputTolerance);
        y_gpu.backward(to_cuda(g, DType::f32));
        REQUIRE(x_gpu.grad().defined());
        check_placement(x_gpu.grad(), DType::f32, format);
        CHECK(max_error(x_gpu.grad(), x_cpu.grad()) <= kGradientTolerance);
      }
    }
  }
}

TEST_CASE("CUDA activations: any shape, and a non-dense input, as on the CPU") {
  test::skip_unless_cuda_device();
  Generator gen(7);
  for (const ActivationCase& op : activation_cases()) {
    CAPTURE(op.name);
    // 2-D (the classifier's hardswish) with backward.
    const Tensor values =
        test::random_tensor({3, 17}, gen, DType::f32, MemoryFormat::contiguous, 4.0);
    const Tensor g = test::random_tensor({3, 17}, gen, DType::f32);
    Tensor x_cpu = cpu_leaf(values, DType::f32);
    Tensor y_cpu = op.fn(x_cpu);
    y_cpu.backward(g);
    Tensor x_gpu = cuda_leaf(values, DType::f32);
    Tensor y_gpu = op.fn(x_gpu);
    CHECK(y_gpu.device() == kCuda);
    CHECK(max_error(y_gpu, y_cpu) <= kOutputTolerance);
    y_gpu.backward(to_cuda(g, DType::f32));
    CHECK(max_error(x_gpu.grad(), x_cpu.grad()) <= kGradientTolerance);

    // A channel slice (not dense): made dense before the kernel.
    const Tensor wide =
        test::random_tensor({3, 9, 5, 5}, gen, DType::f32, MemoryFormat::contiguous, 4.0);
    const Tensor slice_cpu = wide.narrow(1, 2, 5);
    const Tensor slice_gpu = to_cuda(wide, DType::f32).narrow(1, 2, 5);
    REQUIRE_FALSE(slice_gpu.is_dense());
    CHECK(max_error(op.fn(slice_gpu), op.fn(slice_cpu)) <= kOutputTolerance);
  }
}

TEST_CASE("CUDA relu, hardsigmoid, hardswish: f16 in, f16 out, within f16 rounding") {
  test::skip_unless_cuda_device();
  uint64_t seed = 200;
  for (const ActivationCase& op : activation_cases()) {
    for (const Shape& shape : activation_shapes()) {
      for (MemoryFormat format : test::both_formats()) {
        CAPTURE(op.name);
        CAPTURE(shape_str(shape));
        CAPTURE(memory_format_name(format));
        Generator gen(++seed);
        const Tensor values = test::random_tensor(shape, gen, DType::f32, format, 4.0);
        const Tensor g16 =
            test::random_tensor(shape, gen, DType::f32, other_format(format)).to(DType::f16);

        // Reference: the CPU path in f64 on the f16 values.
        Tensor x_ref = cpu_leaf(values.to(DType::f16), DType::f64);
        Tensor y_ref = op.fn(x_ref);
        y_ref.backward(g16.to(DType::f64));

        Tensor x_gpu = cuda_leaf(values, DType::f16);
        Tensor y_gpu = op.fn(x_gpu);
        check_placement(y_gpu, DType::f16, format);
        check_half(y_gpu, y_ref, kOutputTolerance, std::string(op.name) + " f16 output");
        y_gpu.backward(g16.to(kCuda));
        REQUIRE(x_gpu.grad().defined());
        check_placement(x_gpu.grad(), DType::f16, format);
        check_half(x_gpu.grad(), x_ref.grad(), kGradientTolerance,
                   std::string(op.name) + " f16 input gradient");
      }
    }
  }
}

// ---------------------------------------------------------------- pooling --

TEST_CASE("CUDA adaptive_avg_pool2d: f32 and f16 forward and backward match the CPU") {
  test::skip_unless_cuda_device();
  const std::vector<Shape> shapes{{1, 5, 7, 7}, {3, 13, 7, 7}, {3, 13, 1, 1}, {2, 6, 3, 5}};
  uint64_t seed = 300;
  for (const Shape& shape : shapes) {
    for (MemoryFormat format : test::both_formats()) {
      CAPTURE(shape_str(shape));
      CAPTURE(memory_format_name(format));
      Generator gen(++seed);
      const Shape pooled{shape[0], shape[1], 1, 1};
      const Tensor values = test::random_tensor(shape, gen, DType::f32, format);
      const Tensor g = test::random_tensor(pooled, gen, DType::f32);

      {  // f32 against the CPU in f32
        Tensor x_cpu = cpu_leaf(values, DType::f32);
        Tensor y_cpu = adaptive_avg_pool2d(x_cpu);
        y_cpu.backward(g);
        Tensor x_gpu = cuda_leaf(values, DType::f32);
        Tensor y_gpu = adaptive_avg_pool2d(x_gpu);
        CHECK(y_gpu.shape() == pooled);
        CHECK(y_gpu.device() == kCuda);
        CHECK(max_error(y_gpu, y_cpu) <= kOutputTolerance);
        y_gpu.backward(to_cuda(g, DType::f32));
        REQUIRE(x_gpu.grad().defined());
        check_placement(x_gpu.grad(), DType::f32, format);
        CHECK(max_error(x_gpu.grad(), x_cpu.grad()) <= kGradientTolerance);
      }
      {  // f16 against the CPU in f64 on the f16 values
        const Tensor g16 = g.to(DType::f16);
        Tensor x_ref = cpu_leaf(values.to(DType::f16), DType::f64);
        Tensor y_ref = adaptive_avg_pool2d(x_ref);
        y_ref.backward(g16.to(DType::f64));
        Tensor x_gpu = cuda_leaf(values, DType::f16);
        Tensor y_gpu = adaptive_avg_pool2d(x_gpu);
        check_half(y_gpu, y_ref, kOutputTolerance, "pooled f16");
        y_gpu.backward(g16.to(kCuda));
        REQUIRE(x_gpu.grad().defined());
        check_placement(x_gpu.grad(), DType::f16, format);
        check_half(x_gpu.grad(), x_ref.grad(), kGradientTolerance, "pooling f16 input gradient");
      }
    }
  }
}

// ---------------------------------------------------------- channel_scale --

TEST_CASE("CUDA channel_scale: f32 and f16 forward and both gradients match the CPU") {
  test::skip_unless_cuda_device();
  const std::vector<Shape> shapes{{1, 5, 7, 7}, {3, 13, 7, 7}, {3, 13, 1, 1}};
  uint64_t seed = 400;
  for (const Shape& shape : shapes) {
    for (MemoryFormat format : test::both_formats()) {
      // Which inputs require grad: both, only x (the backward keeps only the
      // scale), only the scale (it keeps only x).
      for (int needs = 0; needs < 3; ++needs) {
        const bool need_x = needs != 2, need_s = needs != 1;
        CAPTURE(shape_str(shape));
        CAPTURE(memory_format_name(format));
        CAPTURE(need_x);
        CAPTURE(need_s);
        Generator gen(++seed);
        const Shape scale_shape{shape[0], shape[1], 1, 1};
        const Tensor x_values = test::random_tensor(shape, gen, DType::f32, format);
        const Tensor s_values = test::random_tensor(scale_shape, gen, DType::f32);
        const Tensor g = test::random_tensor(shape, gen, DType::f32, other_format(format));

        for (DType dtype : {DType::f32, DType::f16}) {
          CAPTURE(dtype_name(dtype));
          const bool half = dtype == DType::f16;
          // Reference: f32 on the CPU for f32; f64 on the f16 values for f16.
          const DType ref_dtype = half ? DType::f64 : DType::f32;
          auto ref_values = [&](const Tensor& v) { return half ? v.to(DType::f16) : v; };
          Tensor x_ref = cpu_leaf(ref_values(x_values), ref_dtype);
          Tensor s_ref = cpu_leaf(ref_values(s_values), ref_dtype);
          x_ref.set_requires_grad(need_x);
          s_ref.set_requires_grad(need_s);
          Tensor y_ref = channel_scale(x_ref, s_ref);
          y_ref.backward(ref_values(g).to(ref_dtype));

          Tensor x_gpu = cuda_leaf(x_values, dtype, need_x);
          Tensor s_gpu = cuda_leaf(s_values, dtype, need_s);
          Tensor y_gpu = channel_scale(x_gpu, s_gpu);
          check_placement(y_gpu, dtype, format);
          y_gpu.backward(to_cuda(g, dtype));
          CHECK(x_gpu.grad().defined() == need_x);
          CHECK(s_gpu.grad().defined() == need_s);
          if (half) {
            check_half(y_gpu, y_ref, kOutputTolerance, "channel_scale f16 output");
            if (need_x) check_half(x_gpu.grad(), x_ref.grad(), kGradientTolerance, "grad x f16");
            if (need_s) check_half(s_gpu.grad(), s_ref.grad(), kGradientTolerance, "grad s f16");
          } else {
            CHECK(max_error(y_gpu, y_ref) <= kOutputTolerance);
            if (need_x) CHECK(max_error(x_gpu.grad(), x_ref.grad()) <= kGradientTolerance);
            if (need_s) CHECK(max_error(s_gpu.grad(), s_ref.grad()) <= kGradientTolerance);
          }
          if (need_x) check_placement(x_gpu.grad(), dtype, format);
          if (need_s) CHECK(s_gpu.grad().shape() == scale_shape);
        }
      }
    }
  }
}

TEST_CASE("CUDA SqueezeExcitation module: f32 forward and gradients match the CPU") {
  test::skip_unless_cuda_device();
  for (MemoryFormat format : test::both_formats()) {
    CAPTURE(memory_format_name(format));
    // Same seed, same initialization.
    Generator gen_cpu(11), gen_gpu(11);
    SqueezeExcitation se_cpu(13, make_divisible(13 / 4.0, 8), gen_cpu);
    SqueezeExcitation se_gpu(13, make_divisible(13 / 4.0, 8), gen_gpu);
    se_gpu.to(kCuda);
    Generator gen(12);
    const Shape shape{3, 13, 7, 7};
    const Tensor values = test::random_tensor(shape, gen, DType::f32, format);
    const Tensor g = test::random_tensor(shape, gen, DType::f32, other_format(format));

    Tensor x_cpu = cpu_leaf(values, DType::f32);
    Tensor y_cpu = se_cpu.forward(x_cpu);
    y_cpu.backward(g);
    Tensor x_gpu = cuda_leaf(values, DType::f32);
    Tensor y_gpu = se_gpu.forward(x_gpu);
    check_placement(y_gpu, DType::f32, format);
    CHECK(max_error(y_gpu, y_cpu) <= kOutputTolerance);
    y_gpu.backward(to_cuda(g, DType::f32));
    CHECK(max_error(x_gpu.grad(), x_cpu.grad()) <= kGradientTolerance);
    const auto params_cpu = se_cpu.named_parameters();
    const auto params_gpu = se_gpu.named_parameters();
    REQUIRE(params_cpu.size() == params_gpu.size());
    for (size_t i = 0; i < params_cpu.size(); ++i) {
      CAPTURE(params_cpu[i].first);
      REQUIRE(params_gpu[i].second.grad().defined());
      CHECK(params_gpu[i].second.grad().device() == kCuda);
      CHECK(max_error(params_gpu[i].second.grad(), params_cpu[i].second.grad()) <=
            kGradientTolerance);
    }
  }
}

// ------------------------------------------------------------- batch norm --

TEST_CASE("CUDA batch_norm2d training, f32: output, running statistics, counter, gradients") {
  test::skip_unless_cuda_device();
  uint64_t seed = 500;
  for (size_t k = 0; k < batch_norm_cases().size(); ++k) {
    const BatchNormCase& bn = batch_norm_cases()[k];
    for (MemoryFormat format : test::both_formats()) {
      CAPTURE(shape_str(bn.shape));
      CAPTURE(memory_format_name(format));
      CAPTURE(bn.momentum);
      CAPTURE(bn.eps);
      Generator gen(++seed);
      const int64_t channels = bn.shape[1];
      const BatchNormValues p = batch_norm_values(channels, gen);
      const Tensor values = batch_norm_input(bn.shape, gen, format);
      const Tensor g = test::random_tensor(bn.shape, gen, DType::f32, other_format(format));
      // The counter lives on the CUDA device (as Module::to moves it) in half
      // of the cases, on the host in the other half.
      const bool counter_on_cuda = k % 2 == 0;
      CAPTURE(counter_on_cuda);

      Tensor x_cpu = cpu_leaf(values, DType::f32);
      Tensor w_cpu = cpu_leaf(p.weight, DType::f32), b_cpu = cpu_leaf(p.bias, DType::f32);
      Tensor rm_cpu = p.running_mean.clone(), rv_cpu = p.running_var.clone();
      Tensor count_cpu = full({}, 4.0, TensorOptions(DType::i64));
      Tensor y_cpu =
          batch_norm2d(x_cpu, w_cpu, b_cpu, rm_cpu, rv_cpu, count_cpu, true, bn.momentum, bn.eps);
      y_cpu.backward(g);

      Tensor x_gpu = cuda_leaf(values, DType::f32);
      Tensor w_gpu = cuda_leaf(p.weight, DType::f32), b_gpu = cuda_leaf(p.bias, DType::f32);
      Tensor rm_gpu = to_cuda(p.running_mean, DType::f32);
      Tensor rv_gpu = to_cuda(p.running_var, DType::f32);
      Tensor count_gpu = full({}, 4.0, TensorOptions(DType::i64));
      if (counter_on_cuda) count_gpu = count_gpu.to(kCuda);
      Tensor y_gpu =
          batch_norm2d(x_gpu, w_gpu, b_gpu, rm_gpu, rv_gpu, count_gpu, true, bn.momentum, bn.eps);
      check_placement(y_gpu, DType::f32, format);
      CHECK(max_error(y_gpu, y_cpu) <= kOutputTolerance);
      CHECK(max_error(rm_gpu, rm_cpu) <= kOutputTolerance);
      CHECK(max_error(rv_gpu, rv_cpu) <= kOutputTolerance);
      CHECK(values_of(count_gpu) == std::vector<double>{5.0});
      CHECK(count_gpu.device() == (counter_on_cuda ? kCuda : Device::cpu()));

      y_gpu.backward(to_cuda(g, DType::f32));
      REQUIRE(x_gpu.grad().defined());
      REQUIRE(w_gpu.grad().defined());
      REQUIRE(b_gpu.grad().defined());
      check_placement(x_gpu.grad(), DType::f32, format);
      CHECK(w_gpu.grad().dtype() == DType::f32);
      CHECK(max_error(x_gpu.grad(), x_cpu.grad()) <= kGradientTolerance);
      CHECK(max_error(w_gpu.grad(), w_cpu.grad()) <= kGradientTolerance);
      CHECK(max_error(b_gpu.grad(), b_cpu.grad()) <= kGradientTolerance);
    }
  }
}

// The fused op (batch_norm_activation, layers/batchnorm2d.h) on CUDA against the fused op
// on the CPU, same tolerances as batch_norm2d above. A gradient element whose
// y sits within f32 rounding of a kink (0 for ReLU, +-3 for Hardswish) may
// take the other side's derivative; with normal inputs at these sizes the
// chance of any y within ~1e-6 of a kink is ~1e-3 per case, so no element is
// excluded here (tests/test_cuda_batchnorm_activation.cpp handles kinks at
// the launcher level).
TEST_CASE("CUDA batch_norm_activation, f32: the fused op matches the CPU's, train and eval") {
  test::skip_unless_cuda_device();
  uint64_t seed = 900;
  for (Activation activation : {Activation::relu, Activation::hardswish}) {
    for (bool training : {true, false}) {
      for (MemoryFormat format : test::both_formats()) {
        const Shape shape{3, 13, 7, 7};
        CAPTURE(activation_name(activation));
        CAPTURE(training);
        CAPTURE(memory_format_name(format));
        Generator gen(++seed);
        const BatchNormValues p = batch_norm_values(13, gen);
        const Tensor values = batch_norm_input(shape, gen, format);
        const Tensor g = test::random_tensor(shape, gen, DType::f32, other_format(format));

        Tensor x_cpu = cpu_leaf(values, DType::f32);
        Tensor w_cpu = cpu_leaf(p.weight, DType::f32), b_cpu = cpu_leaf(p.bias, DType::f32);
        Tensor rm_cpu = p.running_mean.clone(), rv_cpu = p.running_var.clone();
        Tensor y_cpu = batch_norm_activation(x_cpu, w_cpu, b_cpu, rm_cpu, rv_cpu, Tensor(),
                                             training, 0.1, 1e-5, activation);
        y_cpu.backward(g);

        Tensor x_gpu = cuda_leaf(values, DType::f32);
        Tensor w_gpu = cuda_leaf(p.weight, DType::f32), b_gpu = cuda_leaf(p.bias, DType::f32);
        Tensor rm_gpu = to_cuda(p.running_mean, DType::f32);
        Tensor rv_gpu = to_cuda(p.running_var, DType::f32);
        Tensor y_gpu = batch_norm_activation(x_gpu, w_gpu, b_gpu, rm_gpu, rv_gpu, Tensor(),
                                             training, 0.1, 1e-5, activation);
        check_placement(y_gpu, DType::f32, format);
        CHECK(max_error(y_gpu, y_cpu) <= kOutputTolerance);
        CHECK(max_error(rm_gpu, rm_cpu) <= kOutputTolerance);
        CHECK(max_error(rv_gpu, rv_cpu) <= kOutputTolerance);
        y_gpu.backward(to_cuda(g, DType::f32));
        CHECK(max_error(x_gpu.grad(), x_cpu.grad()) <= kGradientTolerance);
        CHECK(max_error(w_gpu.grad(), w_cpu.grad()) <= kGradientTolerance);
        CHECK(max_error(b_gpu.grad(), b_cpu.grad()) <= kGradientTolerance);
      }
    }
  }
}

TEST_CASE("CUDA batch_norm2d evaluation, f32: running statistics used and left alone") {
  test::skip_unless_cuda_device();
  uint64_t seed = 600;
  for (const BatchNormCase& bn : batch_norm_cases()) {
    for (MemoryFormat format : test::both_formats()) {
      CAPTURE(shape_str(bn.shape));
      CAPTURE(memory_format_name(format));
      Generator gen(++seed);
      const BatchNormValues p = batch_norm_values(bn.shape[1], gen);
      const Tensor values = batch_norm_input(bn.shape, gen, format);
      const Tensor g = test::random_tensor(bn.shape, gen, DType::f32, other_format(format));

      Tensor x_cpu = cpu_leaf(values, DType::f32);
      Tensor w_cpu = cpu_leaf(p.weight, DType::f32), b_cpu = cpu_leaf(p.bias, DType::f32);
      Tensor y_cpu = batch_norm2d(x_cpu, w_cpu, b_cpu, p.running_mean, p.running_var, Tensor(),
                                  false, bn.momentum, bn.eps);
      y_cpu.backward(g);

      Tensor x_gpu = cuda_leaf(values, DType::f32);
      Tensor w_gpu = cuda_leaf(p.weight, DType::f32), b_gpu = cuda_leaf(p.bias, DType::f32);
      Tensor rm_gpu = to_cuda(p.running_mean, DType::f32);
      Tensor rv_gpu = to_cuda(p.running_var, DType::f32);
      Tensor y_gpu =
          batch_norm2d(x_gpu, w_gpu, b_gpu, rm_gpu, rv_gpu, Tensor(), false, bn.momentum, bn.eps);
      check_placement(y_gpu, DType::f32, format);
      CHECK(max_error(y_gpu, y_cpu) <= kOutputTolerance);
      CHECK(values_of(rm_gpu) == values_of(p.running_mean));  // bit for bit: not written
      CHECK(values_of(rv_gpu) == values_of(p.running_var));

      y_gpu.backward(to_cuda(g, DType::f32));
      CHECK(max_error(x_gpu.grad(), x_cpu.grad()) <= kGradientTolerance);
      CHECK(max_error(w_gpu.grad(), w_cpu.grad()) <= kGradientTolerance);
      CHECK(max_error(b_gpu.grad(), b_cpu.grad()) <= kGradientTolerance);
    }
  }
}

TEST_CASE("CUDA batch_norm2d, f16 input and output with f32 parameters and statistics") {
  test::skip_unless_cuda_device();
  uint64_t seed = 700;
  for (bool training : {true, false}) {
    for (const BatchNormCase& bn : batch_norm_cases()) {
      for (MemoryFormat format : test::both_formats()) {
        CAPTURE(training);
        CAPTURE(shape_str(bn.shape));
        CAPTURE(memory_format_name(format));
        Generator gen(++seed);
        const BatchNormValues p = batch_norm_values(bn.shape[1], gen);
        const Tensor x16 = batch_norm_input(bn.shape, gen, format).to(DType::f16);
        const Tensor g16 =
            test::random_tensor(bn.shape, gen, DType::f32, other_format(format)).to(DType::f16);

        // Reference: the CPU path in f64 on the f16 input values and f32 parameters.
        Tensor x_ref = cpu_leaf(x16, DType::f64);
        Tensor w_ref = cpu_leaf(p.weight, DType::f64), b_ref = cpu_leaf(p.bias, DType::f64);
        Tensor rm_ref = p.running_mean.to(DType::f64), rv_ref = p.running_var.to(DType::f64);
        Tensor y_ref = batch_norm2d(x_ref, w_ref, b_ref, rm_ref, rv_ref, Tensor(), training,
                                    bn.momentum, bn.eps);
        y_ref.backward(g16.to(DType::f64));

        Tensor x_gpu = cuda_leaf(x16, DType::f16);
        Tensor w_gpu = cuda_leaf(p.weight, DType::f32), b_gpu = cuda_leaf(p.bias, DType::f32);
        Tensor rm_gpu = to_cuda(p.running_mean, DType::f32);
        Tensor rv_gpu = to_cuda(p.running_var, DType::f32);
        Tensor count_gpu = zeros({}, TensorOptions(DType::i64).with_device(kCuda));
        Tensor y_gpu = batch_norm2d(x_gpu, w_gpu, b_gpu, rm_gpu, rv_gpu,
                                    training ? count_gpu : Tensor(), training, bn.momentum, bn.eps);
        check_placement(y_gpu, DType::f16, format);
        check_half(y_gpu, y_ref, kOutputTolerance, "batch norm f16 output");
        // The running statistics stay f32 (no f16 rounding): the f32 tolerance.
        CHECK(rm_gpu.dtype() == DType::f32);
        CHECK(max_error(rm_gpu, rm_ref) <= kOutputTolerance);
        CHECK(max_error(rv_gpu, rv_ref) <= kOutputTolerance);
        CHECK(values_of(count_gpu) == std::vector<double>{training ? 1.0 : 0.0});

        y_gpu.backward(g16.to(kCuda));
        REQUIRE(x_gpu.grad().defined());
        check_placement(x_gpu.grad(), DType::f16, format);
        check_half(x_gpu.grad(), x_ref.grad(), kGradientTolerance, "batch norm f16 grad x");
        // f32 parameter gradients from f16 data: f32 sums, f32 tolerance.
        CHECK(w_gpu.grad().dtype() == DType::f32);
        CHECK(b_gpu.grad().dtype() == DType::f32);
        CHECK(max_error(w_gpu.grad(), w_ref.grad()) <= kGradientTolerance);
        CHECK(max_error(b_gpu.grad(), b_ref.grad()) <= kGradientTolerance);
      }
    }
  }
}

TEST_CASE("CUDA BatchNorm2d module after to(cuda): two training steps, then evaluation") {
  test::skip_unless_cuda_device();
  for (MemoryFormat format : test::both_formats()) {
    CAPTURE(memory_format_name(format));
    Generator gen(800);
    const int64_t channels = 13;
    // MobileNetV3's eps and momentum.
    BatchNorm2d bn_cpu(channels, 1e-3, 0.01), bn_gpu(channels, 1e-3, 0.01);
    const BatchNormValues p = batch_norm_values(channels, gen);
    for (BatchNorm2d* bn : {&bn_cpu, &bn_gpu}) {
      bn->weight.copy_(p.weight);
      bn->bias.copy_(p.bias);
    }
    bn_gpu.to(kCuda);
    REQUIRE(bn_gpu.running_mean.device() == kCuda);
    const Shape shape{3, channels, 7, 7};
    for (int step = 0; step < 3; ++step) {
      const bool training = step < 2;
      CAPTURE(step);
      bn_cpu.train(training);
      bn_gpu.train(training);
      const Tensor values = batch_norm_input(shape, gen, format);
      const Tensor g = test::random_tensor(shape, gen, DType::f32, other_format(format));
      bn_cpu.zero_grad();
      bn_gpu.zero_grad();
      Tensor x_cpu = cpu_leaf(values, DType::f32);
      Tensor y_cpu = bn_cpu.forward(x_cpu);
      y_cpu.backward(g);
      Tensor x_gpu = cuda_leaf(values, DType::f32);
      Tensor y_gpu = bn_gpu.forward(x_gpu);
      check_placement(y_gpu, DType::f32, format);
      CHECK(max_error(y_gpu, y_cpu) <= kOutputTolerance);
      y_gpu.backward(to_cuda(g, DType::f32));
      CHECK(max_error(x_gpu.grad(), x_cpu.grad()) <= kGradientTolerance);
      CHECK(max_error(bn_gpu.weight.grad(), bn_cpu.weight.grad()) <= kGradientTolerance);
      CHECK(max_error(bn_gpu.bias.grad(), bn_cpu.bias.grad()) <= kGradientTolerance);
      const auto buffers_cpu = bn_cpu.named_buffers();
      const auto buffers_gpu = bn_gpu.named_buffers();
      REQUIRE(buffers_cpu.size() == buffers_gpu.size());
      for (size_t i = 0; i < buffers_cpu.size(); ++i) {
        CAPTURE(buffers_cpu[i].first);
        CHECK(buffers_gpu[i].second.device() == kCuda);
        CHECK(max_error(buffers_gpu[i].second, buffers_cpu[i].second) <= kOutputTolerance);
      }
    }
    CHECK(values_of(bn_gpu.num_batches_tracked) == std::vector<double>{2.0});
  }
}

TEST_CASE("CUDA batch_norm2d: argument errors name the op and the problem") {
  test::skip_unless_cuda_device();
  Generator gen(900);
  const Tensor x = to_cuda(test::random_tensor({2, 3, 4, 4}, gen, DType::f32), DType::f32);
  const Tensor w = to_cuda(ones({3}), DType::f32);
  const Tensor b = to_cuda(zeros({3}), DType::f32);
  CHECK_THROWS_WITH_AS(
      batch_norm2d(x, to_cuda(ones({3}), DType::f16), b, Tensor(), Tensor(), Tensor(), true),
      doctest::Contains("weight has dtype f16, expected f32 on CUDA"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(batch_norm2d(x, ones({3}), b, Tensor(), Tensor(), Tensor(), true),
                       doctest::Contains("expected every tensor on a CUDA device"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      batch_norm2d(x, to_cuda(ones({4}), DType::f32), b, Tensor(), Tensor(), Tensor(), true),
      doctest::Contains("input has 3 channels, weight has 4"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(batch_norm2d(x, w, b, Tensor(), Tensor(), Tensor(), false),
                       doctest::Contains("must be defined in evaluation mode"),
                       std::invalid_argument);
  const Tensor single = to_cuda(ones({1, 3, 1, 1}), DType::f32);
  CHECK_THROWS_WITH_AS(batch_norm2d(single, w, b, Tensor(), Tensor(), Tensor(), true),
                       doctest::Contains("expected more than 1 value per channel when training"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(adaptive_avg_pool2d(to_cuda(ones({2, 3}), DType::f32)),
                       doctest::Contains("expected a 4-D [N, C, H, W] input"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(channel_scale(x, to_cuda(ones({2, 3, 1, 1}), DType::f16)),
                       doctest::Contains("channel_scale: input is f32, scale is f16"),
                       std::invalid_argument);
}

// ---------------------------------------------------------------- flatten --

TEST_CASE("Flatten on a CUDA [N, C, 1, 1] tensor is a view in either format") {
  test::skip_unless_cuda_device();
  Generator gen(1000);
  Flatten flatten(1);
  for (MemoryFormat format : test::both_formats()) {
    CAPTURE(memory_format_name(format));
    const Tensor values = test::random_tensor({3, 13, 1, 1}, gen, DType::f32, format);
    Tensor x = cuda_leaf(values, DType::f16);
    Tensor flat = flatten.forward(x);
    CHECK(flat.shape() == Shape{3, 13});
    CHECK(flat.device() == kCuda);
    CHECK(flat.data_ptr() == x.data_ptr());  // a view: no copy
    CHECK(values_of(flat) == values_of(x));
    const Tensor g = test::random_tensor({3, 13}, gen, DType::f32).to(DType::f16);
    flat.backward(g.to(kCuda));
    REQUIRE(x.grad().defined());
    CHECK(x.grad().shape() == Shape{3, 13, 1, 1});
    CHECK(values_of(x.grad()) == values_of(g));
  }
}
