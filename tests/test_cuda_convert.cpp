// The element-wise CUDA kernels of tensor/convert_cuda.h against the host:
// f32 <-> f16 casts bit for bit against b3's own conversion (both round to
// nearest even), fill, add and scale against double references.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "tensor/convert_cuda.h"
#include "tests/support/cuda.h"

using namespace b3;
using test::DeviceBuffer;

namespace {

// Awkward values for the casts: signed zeros, f16's limits, values that
// round to inf, subnormals, ties, inf and nan.
std::vector<float> cast_probe_values() {
  std::vector<float> values = {0.0f,
                               -0.0f,
                               1.0f,
                               -1.0f,
                               65504.0f,
                               -65504.0f,
                               65519.0f,
                               65520.0f,
                               1e6f,
                               -1e6f,
                               6.1e-5f,
                               6.0e-8f,
                               2.98e-8f,
                               1e-10f,
                               -3e-8f,
                               1.0009765625f,
                               1.00048828125f,
                               2049.0f,
                               std::numeric_limits<float>::infinity(),
                               -std::numeric_limits<float>::infinity(),
                               std::numeric_limits<float>::quiet_NaN()};
  const std::vector<float> random = test::random_normal(4099, 11, 300.0);
  values.insert(values.end(), random.begin(), random.end());
  const std::vector<float> tiny = test::random_normal(1001, 12, 1e-5);
  values.insert(values.end(), tiny.begin(), tiny.end());
  return values;
}

}  // namespace

TEST_CASE("cuda convert: f32 -> f16 rounds exactly as b3's host conversion") {
  test::skip_unless_cuda_device();
  const cuda::Stream stream = cuda::compute_stream(0);
  const std::vector<float> values = cast_probe_values();
  DeviceBuffer<float> src(values);
  DeviceBuffer<Half> dst(static_cast<int64_t>(values.size()));
  dst.poison();
  cuda::convert(src.data(), dst.data(), src.size(), stream);
  const std::vector<Half> got = dst.download();
  int mismatches = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    const Half expected(values[i]);
    const bool both_nan =
        std::isnan(static_cast<float>(expected)) && std::isnan(static_cast<float>(got[i]));
    if (!both_nan && got[i].bits != expected.bits) {
      if (++mismatches <= 5) {
        INFO("value " << values[i] << ": device bits " << got[i].bits << ", host bits "
                      << expected.bits);
        CHECK(got[i].bits == expected.bits);
      }
    }
  }
  CHECK(mismatches == 0);
}

TEST_CASE("cuda convert: f16 -> f32 is exact for all 65536 bit patterns") {
  test::skip_unless_cuda_device();
  const cuda::Stream stream = cuda::compute_stream(0);
  std::vector<Half> all(65536);
  for (uint32_t bits = 0; bits < 65536; ++bits)
    all[bits] = Half::from_bits(static_cast<uint16_t>(bits));
  DeviceBuffer<Half> src(all);
  DeviceBuffer<float> dst(65536);
  dst.poison();
  cuda::convert(src.data(), dst.data(), 65536, stream);
  const std::vector<float> got = dst.download();
  int mismatches = 0;
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    const float expected = half_bits_to_float(static_cast<uint16_t>(bits));
    const bool same = std::isnan(expected) ? std::isnan(got[bits])
                                           : (got[bits] == expected &&
                                              std::signbit(got[bits]) == std::signbit(expected));
    if (!same) ++mismatches;
  }
  CHECK(mismatches == 0);
}

TEST_CASE("cuda convert: fill writes every element, and nothing past n") {
  test::skip_unless_cuda_device();
  const cuda::Stream stream = cuda::compute_stream(0);
  for (int64_t n : {int64_t{1}, int64_t{255}, int64_t{257}, int64_t{100003}}) {
    CAPTURE(n);
    DeviceBuffer<float> f32(n + 1);  // one guard element past the end
    f32.poison();
    cuda::fill(f32.data(), n, -2.5f, stream);
    std::vector<float> got = f32.download();
    for (int64_t i = 0; i < n; ++i) REQUIRE(got[static_cast<size_t>(i)] == -2.5f);
    CHECK(std::isnan(got.back()));  // untouched
    DeviceBuffer<Half> f16(n + 1);
    f16.poison();
    cuda::fill(f16.data(), n, 0.1f, stream);  // 0.1 rounds to f16 0x2E66
    const std::vector<Half> got16 = f16.download();
    for (int64_t i = 0; i < n; ++i) REQUIRE(got16[static_cast<size_t>(i)].bits == Half(0.1f).bits);
    CHECK(got16.back().bits == 0x7E00);
  }
  // n == 0 touches nothing (and launches nothing).
  DeviceBuffer<float> guard(4);
  guard.poison();
  cuda::fill(guard.data(), 0, 1.0f, stream);
  for (float v : guard.download()) CHECK(std::isnan(v));
}

TEST_CASE("cuda convert: add and scale, f32 and f16, also in place") {
  test::skip_unless_cuda_device();
  const cuda::Stream stream = cuda::compute_stream(0);
  const int64_t n = 50001;
  const std::vector<float> a = test::random_normal(static_cast<size_t>(n), 21, 3.0);
  const std::vector<float> b = test::random_normal(static_cast<size_t>(n), 22, 3.0);
  const float alpha = -0.75f, factor = 1.5f;
  // f32: out = fl(a + fl(alpha * b)) or one fused multiply-add: at most two
  // roundings, 2u * (|a| + |alpha b|) <= 1.2e-7 * (|a| + |alpha b|); the bound
  // uses 1e-6, still far below any real indexing or formula error.
  {
    std::vector<double> expected_add(a.size()), bound_add(a.size());
    std::vector<double> expected_scale(a.size()), bound_scale(a.size());
    for (size_t i = 0; i < a.size(); ++i) {
      expected_add[i] = double(a[i]) + double(alpha) * double(b[i]);
      bound_add[i] = 1e-6 * (std::abs(double(a[i])) + std::abs(double(alpha) * b[i]));
      expected_scale[i] = double(factor) * double(a[i]);
      bound_scale[i] = 1e-6 * std::abs(expected_scale[i]);
    }
    DeviceBuffer<float> da(a), db(b), out(n);
    out.poison();
    cuda::add(da.data(), db.data(), alpha, out.data(), n, stream);
    test::check_within(out.download(), expected_add, bound_add, "add f32");
    cuda::add(da.data(), db.data(), alpha, da.data(), n, stream);  // in place: a += alpha b
    test::check_within(da.download(), expected_add, bound_add, "add f32 in place");
    out.poison();
    DeviceBuffer<float> da2(a);
    cuda::scale(da2.data(), factor, out.data(), n, stream);
    test::check_within(out.download(), expected_scale, bound_scale, "scale f32");
    cuda::scale(da2.data(), factor, da2.data(), n, stream);
    test::check_within(da2.download(), expected_scale, bound_scale, "scale f32 in place");
  }
  // f16: inputs are f16 values; the f32 result (error as above) is rounded
  // once to f16: test::half_output_bound adds 2^-11 |result| (+ 2^-25).
  {
    const std::vector<float> a16 = test::round_to_half(a), b16 = test::round_to_half(b);
    std::vector<double> expected_add(a.size()), f32_add(a.size());
    std::vector<double> expected_scale(a.size()), f32_scale(a.size());
    for (size_t i = 0; i < a.size(); ++i) {
      expected_add[i] = double(a16[i]) + double(alpha) * double(b16[i]);
      f32_add[i] = 1e-6 * (std::abs(double(a16[i])) + std::abs(double(alpha) * b16[i]));
      expected_scale[i] = double(factor) * double(a16[i]);
      f32_scale[i] = 1e-6 * std::abs(expected_scale[i]);
    }
    DeviceBuffer<Half> da(test::to_half(a16)), db(test::to_half(b16)), out(n);
    out.poison();
    cuda::add(da.data(), db.data(), alpha, out.data(), n, stream);
    test::check_within(test::to_float(out.download()), expected_add,
                       test::half_output_bound(expected_add, f32_add), "add f16");
    out.poison();
    cuda::scale(da.data(), factor, out.data(), n, stream);
    test::check_within(test::to_float(out.download()), expected_scale,
                       test::half_output_bound(expected_scale, f32_scale), "scale f16");
  }
}

TEST_CASE("cuda convert: bad arguments throw before touching the device") {
  test::skip_unless_cuda_build();
  const cuda::Stream stream{};  // never used: the checks come first
  float* no_data = nullptr;
  CHECK_THROWS_WITH_AS(cuda::fill(no_data, -1, 0.0f, stream), doctest::Contains("n = -1"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(cuda::fill(no_data, 5, 0.0f, stream), doctest::Contains("dst is null"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(cuda::scale(no_data, 2.0f, no_data, 3, stream),
                       doctest::Contains("cuda::scale: x is null"), std::invalid_argument);
  CHECK_NOTHROW(cuda::fill(no_data, 0, 0.0f, stream));  // nothing to do: no launch
}
