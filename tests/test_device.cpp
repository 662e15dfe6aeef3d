// Devices: names, and what a CUDA request does in this build. Without a usable
// GPU (a CPU-only build says "built without CUDA"; a CUDA build on a machine
// without a driver or GPU says "0 usable CUDA device(s)") every CUDA tensor
// request must fail with an error naming the device; with a GPU the same
// requests must work and copy values exactly.
#include <doctest/doctest.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensor/ops.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

using namespace b3;

TEST_CASE("device: names and equality") {
  CHECK(Device::cpu().str() == "cpu");
  CHECK(Device::cuda().str() == "cuda:0");
  CHECK(Device::cuda(3).str() == "cuda:3");
  CHECK(Device::cpu().is_cpu());
  CHECK(Device::cuda(1).is_cuda());
  CHECK(Device::cuda(0) == Device::cuda());
  CHECK_FALSE(Device::cuda(0) == Device::cuda(1));
  CHECK_FALSE(Device::cuda(0) == Device::cpu());
  CHECK(zeros({2}).device() == Device::cpu());
  CHECK(zeros({2}).str() == "Tensor[2] f32 cpu contiguous");
  CHECK_NOTHROW(require_device_available(Device::cpu(), "test"));
  if (!built_with_cuda()) CHECK(cuda_device_count() == 0);
  CHECK(cuda_device_count() >= 0);
}

TEST_CASE("device: without a usable GPU the reason is the runtime's own words") {
  // Empty exactly when a device is usable; otherwise it names the cause, so an
  // old driver (cudaErrorInsufficientDriver) is told apart from no GPU at all.
  const std::string reason = cuda_unavailable_reason();
  CHECK(reason.empty() == (cuda_device_count() > 0));
  if (!built_with_cuda()) CHECK(reason == "b3 was built without CUDA");
  if (built_with_cuda() && cuda_device_count() == 0) {
    // cudaGetErrorName's answer is in parentheses ("(cudaErrorNoDevice)", ...)
    // unless the driver answered and counted zero devices.
    const bool named = reason.find("(cudaError") != std::string::npos ||
                       reason == "the CUDA driver reports no GPU";
    CHECK_MESSAGE(named, reason);
    // and require_device_available passes it on
    CHECK_THROWS_WITH_AS(require_device_available(Device::cuda(), "test"),
                         doctest::Contains(reason.c_str()), std::runtime_error);
  }
}

TEST_CASE("device: a CUDA tensor without a usable GPU fails with a clear error") {
  const auto on = [](const Device& d) { return TensorOptions(DType::f32).with_device(d); };
  if (cuda_device_count() == 0) {
    // The message names the device in either build ("... on cuda:0, but b3 was
    // built without CUDA" or "asked for cuda:0, but this machine has 0 usable
    // CUDA device(s)").
    CHECK_THROWS_WITH_AS(empty({2, 3}, on(Device::cuda())), doctest::Contains("cuda:0"),
                         std::runtime_error);
    CHECK_THROWS_WITH_AS(zeros({2, 3}, on(Device::cuda())), doctest::Contains("cuda:0"),
                         std::runtime_error);
    CHECK_THROWS_WITH_AS(from_doubles({1, 2}, {2}, on(Device::cuda())), doctest::Contains("cuda:0"),
                         std::runtime_error);
    CHECK_THROWS_WITH_AS(zeros({2}).to(Device::cuda()), doctest::Contains("cuda:0"),
                         std::runtime_error);
    CHECK_THROWS_WITH_AS(require_device_available(Device::cuda(), "my_op"),
                         doctest::Contains("my_op: asked for"), std::runtime_error);
    // Either way the message says what is missing.
    try {
      empty({1}, on(Device::cuda()));
    } catch (const std::runtime_error& e) {
      const std::string message = e.what();
      CHECK((message.find("built without CUDA") != std::string::npos ||
             message.find("0 usable CUDA device") != std::string::npos));
    }
  }
  // An index past the devices there are fails in every build and on every machine.
  CHECK_THROWS_WITH_AS(empty({2}, on(Device::cuda(99))), doctest::Contains("cuda:99"),
                       std::runtime_error);
  CHECK_THROWS_AS(empty({2}, on(Device::cuda(-1))), std::runtime_error);
}

TEST_CASE("device: with a GPU, tensors round-trip through CUDA exactly") {
  // On a machine with a GPU (and a CUDA build) this is the check; without one,
  // the test above is, and this one asserts that the two agree.
  if (cuda_device_count() == 0) {
    CHECK_THROWS_AS(empty({1}, TensorOptions().with_device(Device::cuda())), std::runtime_error);
    return;
  }
  REQUIRE(built_with_cuda());
  Generator gen(1);
  for (MemoryFormat format : {MemoryFormat::contiguous, MemoryFormat::channels_last}) {
    for (DType dtype : {DType::f32, DType::f64, DType::f16, DType::u8, DType::i64}) {
      const Tensor host = randint(200, {2, 3, 5, 7}, gen, TensorOptions(dtype).with_format(format));
      const Tensor device = host.to(Device::cuda());
      CHECK(device.device() == Device::cuda());
      CHECK(device.is_contiguous(format));
      CHECK(device.to_doubles() == host.to_doubles());
      CHECK(device.to(Device::cpu()).to_doubles() == host.to_doubles());
      // Default device alignment: 256 bytes.
      CHECK(reinterpret_cast<uintptr_t>(device.data_ptr()) % 256 == 0);
    }
  }
  // Device to device, across layouts, and full() on the device.
  const Tensor a = full({2, 3, 4, 5}, 1.5, TensorOptions().with_device(Device::cuda()));
  Tensor b =
      empty({2, 3, 4, 5},
            TensorOptions().with_device(Device::cuda()).with_format(MemoryFormat::channels_last));
  b.copy_(a);
  CHECK(b.to_doubles() == std::vector<double>(120, 1.5));
  // A misaligned device allocation lands exactly where asked.
  const Tensor m =
      empty({8}, TensorOptions().with_device(Device::cuda()).with_allocation({256, 4}));
  CHECK(reinterpret_cast<uintptr_t>(m.data_ptr()) % 256 == 4);
  // CPU-only ops refuse device tensors by name.
  CHECK_THROWS_WITH_AS(sum(a), doctest::Contains("sum: not implemented on cuda:0"),
                       std::runtime_error);
  Tensor dev = a;
  CHECK_THROWS_AS(dev.data<float>(), std::invalid_argument);
}
