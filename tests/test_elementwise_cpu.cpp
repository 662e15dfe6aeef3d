// map_elements (tensor/elementwise_cpu.h): every element written once with
// the right value, on outputs small and large (the streaming-store path),
// aligned and not, with per-channel periodic constants for channel counts
// that are and are not multiples of the vector width, on 1 and 2 threads;
// and the GEMM's streamed output (gemm_rows into a large aligned C).
#include <doctest/doctest.h>

#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <memory>
#include <vector>

#include "layers/gemm_cpu.h"
#include "tensor/elementwise_cpu.h"
#include "tensor/random.h"

using namespace b3;

namespace {

// A 64-byte aligned buffer (as tensors' storage is), filled with `fill`.
template <typename T>
std::unique_ptr<T[], void (*)(void*)> aligned_buffer(int64_t count, T fill) {
  const size_t bytes = (static_cast<size_t>(count) * sizeof(T) + 63) / 64 * 64;
  T* p = static_cast<T*>(std::aligned_alloc(64, bytes));
  for (int64_t i = 0; i < count; ++i) p[i] = fill;
  return {p, std::free};
}

template <typename T>
std::vector<T> random_values(int64_t count, Generator& gen) {
  std::vector<T> v(static_cast<size_t>(count));
  for (T& x : v) x = static_cast<T>(gen.normal());
  return v;
}

}  // namespace

TEST_CASE("map_elements: every element, small and streamed outputs, aligned or not") {
  Generator gen(41);
  const int saved_threads = omp_get_max_threads();
  // 3,000,005 floats = 12 MB: above kStreamingBytes (8 MB), not a multiple of 16.
  for (int64_t n : {int64_t{1}, int64_t{15}, int64_t{1000}, int64_t{3000005}}) {
    for (int threads : {1, 2}) {
      for (int64_t offset : {0, 1}) {  // offset 1: out is not 64-byte aligned
        CAPTURE(n);
        CAPTURE(threads);
        CAPTURE(offset);
        omp_set_num_threads(threads);
        const std::vector<float> x = random_values<float>(n, gen);
        const std::vector<float> y = random_values<float>(n, gen);
        auto storage = aligned_buffer<float>(n + 32, -7.0f);
        float* out = storage.get() + offset;
        // The large aligned output takes the streaming path, the others not.
        CHECK(cpu::use_streaming(out, n) == (n == 3000005 && offset == 0));
        cpu::map_elements(
            n, out, 0, [](auto a, auto b) { return a > 0 ? a * b : b - 1; }, x.data(), y.data());
        int64_t wrong = 0;
        for (int64_t i = 0; i < n; ++i) {
          const float expected = x[i] > 0 ? x[i] * y[i] : y[i] - 1;
          // One f32 operation each way, vector or scalar: the same value.
          if (std::abs(out[i] - expected) > 1e-6f * (std::abs(expected) + 1)) ++wrong;
        }
        CHECK(wrong == 0);
        // Nothing written outside [out, out + n).
        for (int64_t i = 0; i < offset; ++i) CHECK(storage[i] == -7.0f);
        for (int64_t i = n + offset; i < n + 32; ++i) CHECK(storage[i] == -7.0f);
      }
    }
  }
  omp_set_num_threads(saved_threads);
}

TEST_CASE("map_elements: per-channel periodic constants, float and double") {
  Generator gen(42);
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(2);
  // Channel counts: a multiple of 16, of 8 only, odd; rows such that the
  // output crosses 8 MB for the first ones (streamed) and not for the last.
  const int64_t cases[][2] = {{64, 40000}, {24, 90000}, {29, 1001}, {3, 5}};
  for (const auto& c : cases) {
    const int64_t channels = c[0], rows = c[1], n = channels * rows;
    CAPTURE(channels);
    CAPTURE(rows);
    const std::vector<float> x = random_values<float>(n, gen);
    const std::vector<double> scale = random_values<double>(channels, gen);
    const std::vector<double> shift = random_values<double>(channels, gen);
    const int64_t period = cpu::channel_period<float>(channels);
    CHECK(period % channels == 0);
    CHECK(period % cpu::Vec64<float>::lanes == 0);
    std::vector<float> patterns(static_cast<size_t>(2 * (period + 16)));
    const auto s = cpu::make_periodic(
        patterns.data(), period, [&](int64_t ch) { return scale[ch]; }, channels);
    const auto b = cpu::make_periodic(
        patterns.data() + period + 16, period, [&](int64_t ch) { return shift[ch]; }, channels);
    auto y = aligned_buffer<float>(n, 0.0f);
    CHECK(cpu::use_streaming(y.get(), n) == (n * 4 >= cpu::kStreamingBytes));
    cpu::map_elements(
        n, y.get(), period, [](auto xe, auto se, auto be) { return xe * se + be; }, x.data(), s, b);
    double worst = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double expected =
          double(x[i]) * float(scale[i % channels]) + float(shift[i % channels]);
      worst = std::max(worst, std::abs(y[i] - expected) / (std::abs(expected) + 1.0));
    }
    // One f32 multiply-add (fused or not): within 2 f32 roundings, 1.2e-7.
    CHECK(worst < 2.4e-7);
  }
  // double elements, period = lcm(C, 8)
  const int64_t channels = 12, rows = 50;
  const std::vector<double> x = random_values<double>(channels * rows, gen);
  const int64_t period = cpu::channel_period<double>(channels);
  CHECK(period == 24);
  std::vector<double> pattern(static_cast<size_t>(period + 8));
  const auto s = cpu::make_periodic(
      pattern.data(), period, [](int64_t ch) { return ch + 1.0; }, channels);
  std::vector<double> y(x.size());
  cpu::map_elements(
      channels * rows, y.data(), period, [](auto xe, auto se) { return xe * se; }, x.data(), s);
  for (int64_t i = 0; i < channels * rows; ++i)
    CHECK(y[static_cast<size_t>(i)] == x[static_cast<size_t>(i)] * double(i % channels + 1));
  omp_set_num_threads(saved_threads);
}

TEST_CASE("gemm_rows: a large aligned C is written with streaming stores, correctly") {
  Generator gen(43);
  // C is 150,000 x 16 floats = 9.6 MB, rows 64 bytes: the streamed path.
  const int64_t m = 150000, n = 16, k = 8;
  const std::vector<float> a = random_values<float>(m * k, gen);
  const std::vector<float> w = random_values<float>(n * k, gen);
  auto c = aligned_buffer<float>(m * n, 0.0f);
  CHECK(cpu::use_streaming(c.get(), m * n));
  cpu::gemm_rows(m, n, k, a.data(), k, w.data(), k, /*b_transposed=*/true, c.get(), n, false);
  double worst = 0.0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0.0, magnitude = 0.0;
      for (int64_t p = 0; p < k; ++p) {
        const double t = double(a[i * k + p]) * double(w[j * k + p]);
        sum += t;
        magnitude += std::abs(t);
      }
      worst = std::max(worst, std::abs(c[i * n + j] - sum) / (magnitude + 1.0));
    }
  // f32 sums of 8 products: at most ~8 * 6e-8 of the sum of magnitudes.
  CHECK(worst < 5e-7);
}
