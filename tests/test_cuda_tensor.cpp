// Tensors on a CUDA device: copies between layouts, dtypes and devices (the
// strided copy kernel), fill_, add_, mul_, the recorded ops add/sub/scale,
// autograd's gradient accumulation, autocast's recorded cast, and
// Module::to(Device) / to(MemoryFormat), each against the same operation on
// the CPU.
//
// Tolerances: copies, layout changes, f16 -> f32 and f32 -> f16 conversions
// are exact (both sides round to nearest even once, or not at all), so they
// must match bit for bit. add_, mul_, add, sub and scale compute one f32
// operation per element on both sides (no FMA contraction can change a single
// rounded add or multiply): exact too. Each case needs a GPU and skips
// cleanly (exit 77) without one.
#include <doctest/doctest.h>

#include <vector>

#include "layers/conv2d.h"
#include "layers/module.h"
#include "tensor/autocast.h"
#include "tensor/ops.h"
#include "tensor/random.h"
#include "tests/support/cuda.h"

using namespace b3;

namespace {

const Device kGpu = Device::cuda(0);

void check_equal(const Tensor& gpu, const Tensor& cpu) {
  REQUIRE(gpu.shape() == cpu.shape());
  CHECK(gpu.device() == kGpu);
  CHECK(gpu.dtype() == cpu.dtype());
  const std::vector<double> a = gpu.to_doubles();
  const std::vector<double> b = cpu.to_doubles();
  size_t mismatches = 0;
  for (size_t i = 0; i < a.size(); ++i) mismatches += (a[i] == b[i]) ? 0 : 1;
  INFO(mismatches << " of " << a.size() << " elements differ");
  CHECK(mismatches == 0);
}

}  // namespace

TEST_CASE("cuda tensor: copies across layouts, dtypes and devices are exact") {
  test::skip_unless_cuda_device();
  Generator gen(5);
  const Tensor host = randn({3, 5, 7, 9}, gen);  // NCHW f32
  for (MemoryFormat from : {MemoryFormat::contiguous, MemoryFormat::channels_last}) {
    for (MemoryFormat to : {MemoryFormat::contiguous, MemoryFormat::channels_last}) {
      for (DType dtype : {DType::f32, DType::f16}) {
        CAPTURE(memory_format_name(from));
        CAPTURE(memory_format_name(to));
        CAPTURE(dtype_name(dtype));
        const Tensor source = host.contiguous(from);
        const Tensor on_gpu = source.to(kGpu);
        CHECK(on_gpu.suggest_memory_format() == source.suggest_memory_format());
        // Layout change and dtype change on the device vs the same on the host.
        const Tensor gpu_result = on_gpu.contiguous(to).to(dtype);
        const Tensor cpu_result = source.contiguous(to).to(dtype);
        CHECK(gpu_result.is_contiguous(to));
        check_equal(gpu_result, cpu_result);
        // And back (f16 -> f32 exact).
        check_equal(gpu_result.to(DType::f32), cpu_result.to(DType::f32));
      }
    }
  }
  // A strided view (narrow, transpose) copied on the device.
  const Tensor on_gpu = host.to(kGpu);
  check_equal(on_gpu.narrow(2, 1, 4).transpose(1, 3).contiguous(),
              host.narrow(2, 1, 4).transpose(1, 3).contiguous());
  // Host -> device into a destination of another layout and dtype.
  Tensor destination =
      empty(host.shape(),
            TensorOptions(DType::f16).with_device(kGpu).with_format(MemoryFormat::channels_last));
  destination.copy_(host);
  check_equal(destination, host.contiguous(MemoryFormat::channels_last).to(DType::f16));
}

TEST_CASE("cuda tensor: fill_, zeros, ones, add_ and mul_ match the CPU") {
  test::skip_unless_cuda_device();
  Generator gen(6);
  for (DType dtype : {DType::f32, DType::f16}) {
    CAPTURE(dtype_name(dtype));
    const Tensor a = randn({1000, 7}, gen).to(dtype);
    const Tensor b = randn({1000, 7}, gen).to(dtype);
    Tensor gpu = a.to(kGpu);
    Tensor cpu = a.to(DType::f32).clone();
    gpu.add_(b.to(kGpu), 0.5);
    cpu.add_(b.to(DType::f32), 0.5);
    check_equal(gpu, cpu.to(dtype));
    gpu.mul_(-3.0);
    cpu = cpu.to(dtype).to(DType::f32);
    cpu.mul_(-3.0);
    check_equal(gpu, cpu.to(dtype));
    check_equal(full({4, 3}, 2.5, TensorOptions(dtype).with_device(kGpu)),
                full({4, 3}, 2.5, TensorOptions(dtype)));
    check_equal(zeros({0}, TensorOptions(dtype).with_device(kGpu)), zeros({0}, dtype));
  }
  // add_ of a tensor in another layout: aligned on the device first.
  const Tensor x = randn({2, 3, 4, 5}, gen);
  const Tensor y = randn({2, 3, 4, 5}, gen).contiguous(MemoryFormat::channels_last);
  Tensor gpu = x.to(kGpu);
  gpu.add_(y.to(kGpu));
  Tensor cpu = x.clone();
  cpu.add_(y);
  check_equal(gpu, cpu);
}

TEST_CASE("cuda tensor: add, sub and scale with autograd, gradients accumulate on the device") {
  test::skip_unless_cuda_device();
  Generator gen(7);
  const Tensor a_host = randn({2, 6, 3, 3}, gen).contiguous(MemoryFormat::channels_last);
  const Tensor b_host = randn({2, 6, 3, 3}, gen);
  const Tensor g_host = randn({2, 6, 3, 3}, gen);
  auto run = [&](const Device& device) {
    Tensor a = a_host.to(device).set_requires_grad(true);
    Tensor b = b_host.to(device).set_requires_grad(true);
    // a is used three times: its gradient is the sum of three contributions.
    const Tensor out = add(scale(sub(a, b), 2.0), add(a, a));
    out.backward(g_host.to(device));
    return std::vector<Tensor>{out, a.grad(), b.grad()};
  };
  const std::vector<Tensor> gpu = run(kGpu);
  const std::vector<Tensor> cpu = run(Device::cpu());
  for (size_t i = 0; i < gpu.size(); ++i) {
    CAPTURE(i);
    check_equal(gpu[i], cpu[i]);
  }
  CHECK_THROWS_WITH_AS(mul(a_host.to(kGpu), a_host.to(kGpu)), doctest::Contains("mul"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(add(a_host.to(kGpu), a_host), doctest::Contains("different devices"),
                       std::invalid_argument);
}

TEST_CASE("cuda tensor: autocast casts conv inputs to f16 and sends f32 gradients back") {
  test::skip_unless_cuda_device();
  Generator gen(8);
  const Tensor w = randn({4, 3, 3, 3}, gen).to(kGpu).set_requires_grad(true);
  const Tensor x = randn({2, 3, 8, 8}, gen).to(kGpu).set_requires_grad(true);
  CHECK(!autocast_dtype().has_value());
  Tensor y;
  {
    AutocastGuard autocast;
    CHECK(autocast_dtype() == DType::f16);
    CHECK(autocast_cast(x).dtype() == DType::f16);
    CHECK(autocast_cast(x.to(Device::cpu())).dtype() == DType::f32);  // CPU: untouched
    y = conv2d(x, w, Tensor(), 1, 1, 1);
  }
  CHECK(!autocast_dtype().has_value());
  CHECK(y.dtype() == DType::f16);
  y.backward(ones(y.shape(), TensorOptions(DType::f16).with_device(kGpu)));
  REQUIRE(w.grad().defined());
  CHECK(w.grad().dtype() == DType::f32);
  CHECK(x.grad().dtype() == DType::f32);
}

TEST_CASE("cuda tensor: Module::to moves parameters and buffers and keeps their identity") {
  test::skip_unless_cuda_device();
  Generator gen(9);
  Conv2d conv(Conv2dOptions{3, 8, 3, 1, 1, 1, true}, gen);
  const Tensor weight_before = conv.weight.clone();
  const Tensor handle = conv.weight;
  conv.to(MemoryFormat::channels_last);
  conv.to(kGpu);
  CHECK(handle.is_same(conv.weight));
  CHECK(conv.weight.device() == kGpu);
  CHECK(conv.weight.is_contiguous(MemoryFormat::channels_last));
  CHECK(conv.bias.device() == kGpu);
  check_equal(conv.weight, weight_before.contiguous(MemoryFormat::channels_last));
  conv.to(Device::cpu());
  CHECK(conv.weight.device().is_cpu());
}
