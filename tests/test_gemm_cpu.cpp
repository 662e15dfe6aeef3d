// The single-precision GEMM kernels of the NHWC convolutions (layers/gemm_cpu.h):
// gemm_rows and gemm_at_b against plain double loops on shapes with every
// kind of tail (rows not a multiple of the 12-row tile, columns not a multiple
// of 16 or 32, strides wider than the rows), the accumulate flags, results
// independent of the thread count, and the fused 1x1-convolution backward
// bit-identical to the two separate products.
#include <doctest/doctest.h>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "layers/gemm_cpu.h"
#include "tensor/random.h"

using namespace b3;

namespace {

std::vector<float> random_values(int64_t count, Generator& gen) {
  std::vector<float> v(static_cast<size_t>(count));
  for (float& x : v) x = static_cast<float>(gen.normal());
  return v;
}

// Largest |actual - expected| / (sum of |terms| + 1) over a matrix: the error
// of an f32 dot product of length L is bounded by ~L * 6e-8 times the sum of
// the absolute values of its terms, so this ratio stays below L * 6e-8.
double worst_scaled_error(const std::vector<float>& actual, int64_t ld_actual,
                          const std::vector<double>& expected, const std::vector<double>& scale,
                          int64_t rows, int64_t cols) {
  double worst = 0.0;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const size_t e = static_cast<size_t>(i * cols + j);
      const double diff =
          std::abs(double(actual[static_cast<size_t>(i * ld_actual + j)]) - expected[e]);
      worst = std::max(worst, diff / (scale[e] + 1.0));
    }
  return worst;
}

}  // namespace

TEST_CASE("gemm_rows: C (+)= A op(B) matches double loops, every tail") {
  Generator gen(11);
  // (m, n, k): rows 1, 12, 13, 127; columns 1, 16, 17, 32, 40, 72; depth 1, 3, 27, 160.
  const int64_t shapes[][3] = {{1, 1, 1},    {12, 16, 3},  {13, 17, 27}, {127, 40, 160},
                               {25, 32, 16}, {50, 72, 24}, {7, 8, 5}};
  for (const auto& shape : shapes) {
    const int64_t m = shape[0], n = shape[1], k = shape[2];
    for (bool transposed : {false, true}) {
      for (bool accumulate : {false, true}) {
        CAPTURE(m);
        CAPTURE(n);
        CAPTURE(k);
        CAPTURE(transposed);
        CAPTURE(accumulate);
        const int64_t lda = k + 3, ldb = (transposed ? k : n) + 2, ldc = n + 5;
        const std::vector<float> a = random_values(m * lda, gen);
        const std::vector<float> b = random_values((transposed ? n : k) * ldb, gen);
        std::vector<float> c = random_values(m * ldc, gen);
        std::vector<double> expected(static_cast<size_t>(m * n)), scale(expected.size());
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) {
            double sum = accumulate ? c[static_cast<size_t>(i * ldc + j)] : 0.0;
            double magnitude = std::abs(sum);
            for (int64_t p = 0; p < k; ++p) {
              const double bv = transposed ? b[static_cast<size_t>(j * ldb + p)]
                                           : b[static_cast<size_t>(p * ldb + j)];
              sum += double(a[static_cast<size_t>(i * lda + p)]) * bv;
              magnitude += std::abs(double(a[static_cast<size_t>(i * lda + p)]) * bv);
            }
            expected[static_cast<size_t>(i * n + j)] = sum;
            scale[static_cast<size_t>(i * n + j)] = magnitude;
          }
        const std::vector<float> before = c;
        cpu::gemm_rows(m, n, k, a.data(), lda, b.data(), ldb, transposed, c.data(), ldc,
                       accumulate);
        // f32 products summed over k <= 160 terms (+1 for the accumulated C):
        // at most ~161 * 6e-8 = 1e-5 of the sum of magnitudes.
        CHECK(worst_scaled_error(c, ldc, expected, scale, m, n) < 1e-5);
        // The padding between rows (columns n .. ldc) is never written.
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = n; j < ldc; ++j)
            CHECK(c[static_cast<size_t>(i * ldc + j)] == before[static_cast<size_t>(i * ldc + j)]);
      }
    }
  }
}

TEST_CASE("gemm_at_b: C (+)= A^T B matches double loops, every tail, many slices") {
  Generator gen(12);
  // (m, n, k): m up to 9000 rows crosses the 4096-row slices and 256-row chunks;
  // n > 36 with k > 32 packs B's chunks (k = 33: a 1-column last panel), and
  // k > 96 (four panels or more) packs A's tiles too (n = 40 and 37: last
  // tiles of 4 and 1 rows; k = 129: a last panel 1 column wide).
  // C of at most 16 columns and 32 rows or more is computed transposed
  // ({9000, 64, 16}: an expand convolution's weight gradient, over slices;
  // {300, 70, 5}: one slice, tails in both directions).
  const int64_t shapes[][3] = {{1, 1, 1},       {5, 12, 16},    {300, 13, 17},
                               {9000, 24, 40},  {700, 72, 33},  {600, 40, 100},
                               {1000, 37, 129}, {9000, 64, 16}, {300, 70, 5}};
  for (const auto& shape : shapes) {
    const int64_t m = shape[0], n = shape[1], k = shape[2];
    for (bool accumulate : {false, true}) {
      CAPTURE(m);
      CAPTURE(n);
      CAPTURE(k);
      CAPTURE(accumulate);
      const int64_t lda = n + 1, ldb = k + 2, ldc = k + 3;
      const std::vector<float> a = random_values(m * lda, gen);
      const std::vector<float> b = random_values(m * ldb, gen);
      std::vector<float> c = random_values(n * ldc, gen);
      std::vector<double> expected(static_cast<size_t>(n * k)), scale(expected.size());
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < k; ++j) {
          double sum = accumulate ? c[static_cast<size_t>(i * ldc + j)] : 0.0;
          double magnitude = std::abs(sum);
          for (int64_t r = 0; r < m; ++r) {
            const double t = double(a[static_cast<size_t>(r * lda + i)]) *
                             double(b[static_cast<size_t>(r * ldb + j)]);
            sum += t;
            magnitude += std::abs(t);
          }
          expected[static_cast<size_t>(i * k + j)] = sum;
          scale[static_cast<size_t>(i * k + j)] = magnitude;
        }
      cpu::gemm_at_b(m, n, k, a.data(), lda, b.data(), ldb, c.data(), ldc, accumulate);
      // f32 sums of up to 9000 products, added in chunks of 256 and slices of
      // 4096: error bounded by ~(256 + 16 + 3) * 6e-8 = 1.7e-5 of the sum of
      // magnitudes (a chunk's running sum, then chunk and slice additions).
      CHECK(worst_scaled_error(c, ldc, expected, scale, n, k) < 2e-5);
    }
  }
}

TEST_CASE("gemm kernels: results do not depend on the number of threads") {
  Generator gen(13);
  const int saved_threads = omp_get_max_threads();
  // (n, k) = (24, 40), and (64, 16), whose gemm_at_b is computed transposed.
  for (const auto& shape : {std::pair<int64_t, int64_t>{24, 40}, {64, 16}}) {
    const int64_t n = shape.first, k = shape.second;  // CAPTURE cannot take structured bindings
    CAPTURE(n);
    const int64_t m = 20000;
    const std::vector<float> a = random_values(m * n, gen);
    const std::vector<float> b = random_values(m * k, gen);
    const std::vector<float> w = random_values(n * k, gen);
    std::vector<std::vector<float>> at_b_results, rows_results;
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      std::vector<float> c(static_cast<size_t>(n * k)), d(static_cast<size_t>(m * k));
      cpu::gemm_at_b(m, n, k, a.data(), n, b.data(), k, c.data(), k, false);
      cpu::gemm_rows(m, k, n, a.data(), n, w.data(), k, false, d.data(), k, false);
      at_b_results.push_back(c);
      rows_results.push_back(d);
    }
    CHECK(at_b_results[0] == at_b_results[1]);
    CHECK(at_b_results[0] == at_b_results[2]);
    CHECK(rows_results[0] == rows_results[1]);
    CHECK(rows_results[0] == rows_results[2]);
  }
  omp_set_num_threads(saved_threads);
}

TEST_CASE("conv1x1_backward: bit-identical to gemm_rows and gemm_at_b") {
  Generator gen(14);
  const int saved_threads = omp_get_max_threads();
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    // m = 40000 rows: 10 slices, enough for the fused path with 1 and 2 threads;
    // n = 64 with k = 16: the weight gradient computed transposed.
    for (const int64_t n : {24, 64}) {
      CAPTURE(n);
      const int64_t m = 40000, k = 16;
      const std::vector<float> g = random_values(m * n, gen);
      const std::vector<float> x = random_values(m * k, gen);
      const std::vector<float> w = random_values(n * k, gen);
      std::vector<float> grad_x(static_cast<size_t>(m * k)), grad_w(static_cast<size_t>(n * k));
      const bool fused = cpu::conv1x1_backward(m, n, k, g.data(), n, w.data(), k, x.data(), k,
                                               grad_x.data(), k, grad_w.data(), k);
      CHECK(fused == cpu::gemm_kernels_vectorized());
      std::vector<float> ref_x(grad_x.size()), ref_w(grad_w.size());
      cpu::gemm_rows(m, k, n, g.data(), n, w.data(), k, false, ref_x.data(), k, false);
      cpu::gemm_at_b(m, n, k, g.data(), n, x.data(), k, ref_w.data(), k, false);
      if (fused) {
        CHECK(grad_x == ref_x);
        CHECK(grad_w == ref_w);
      }
      // Too few rows to split: it declines and leaves the outputs alone.
      std::vector<float> untouched_x(static_cast<size_t>(100 * k), 7.0f);
      std::vector<float> untouched_w(static_cast<size_t>(n * k), 7.0f);
      CHECK_FALSE(cpu::conv1x1_backward(100, n, k, g.data(), n, w.data(), k, x.data(), k,
                                        untouched_x.data(), k, untouched_w.data(), k));
      CHECK(untouched_x == std::vector<float>(untouched_x.size(), 7.0f));
      CHECK(untouched_w == std::vector<float>(untouched_w.size(), 7.0f));
    }
  }
  omp_set_num_threads(saved_threads);
}

TEST_CASE("gemm_at_b: a C computed transposed is bit-identical to the plain form") {
  // Adding into a zero C keeps the plain form (its rounding order would
  // differ transposed); 0 + the first chunk's sum is exact, so both must agree
  // to the bit. One slice (m <= 4096) and shapes with tails.
  // One thread: one group of C's rows, so each shape takes the transposed path.
  Generator gen(15);
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  for (const auto& shape : {std::pair<int64_t, int64_t>{64, 16}, {45, 7}, {32, 1}}) {
    const int64_t n = shape.first, k = shape.second;
    CAPTURE(n);
    CAPTURE(k);
    const int64_t m = 3000;
    const std::vector<float> a = random_values(m * n, gen);
    const std::vector<float> b = random_values(m * k, gen);
    std::vector<float> transposed(static_cast<size_t>(n * k), 5.0f);
    std::vector<float> plain(static_cast<size_t>(n * k), 0.0f);
    cpu::gemm_at_b(m, n, k, a.data(), n, b.data(), k, transposed.data(), k, false);
    cpu::gemm_at_b(m, n, k, a.data(), n, b.data(), k, plain.data(), k, true);
    CHECK(transposed == plain);
  }
  omp_set_num_threads(saved_threads);
}

TEST_CASE(
    "conv1x1_backward: both gradients match double loops, with tails, into poisoned outputs") {
  // The case above compares the fused path with the kernels it is built from,
  // which share their bugs; this one checks it against the formulas. n = 37
  // and k = 21 leave partial panels and tiles; the outputs start as NaN, so
  // an element the kernel skips, or accumulates into instead of writing,
  // shows.
  Generator gen(15);
  const int saved_threads = omp_get_max_threads();
  for (int threads : {1, 2}) {
    for (const auto& shape : {std::pair<int64_t, int64_t>{37, 21}, {24, 16}, {17, 33}}) {
      const int64_t n = shape.first, k = shape.second;  // CAPTURE cannot take structured bindings
      omp_set_num_threads(threads);
      CAPTURE(threads);
      CAPTURE(n);
      CAPTURE(k);
      const int64_t m = 40000;
      const std::vector<float> g = random_values(m * n, gen);
      const std::vector<float> x = random_values(m * k, gen);
      const std::vector<float> w = random_values(n * k, gen);
      std::vector<float> grad_x(static_cast<size_t>(m * k), std::nanf(""));
      std::vector<float> grad_w(static_cast<size_t>(n * k), std::nanf(""));
      if (!cpu::conv1x1_backward(m, n, k, g.data(), n, w.data(), k, x.data(), k, grad_x.data(), k,
                                 grad_w.data(), k)) {
        MESSAGE("the fused path is not built here (no vectorized kernels)");
        continue;
      }
      // grad_x = g w: [m, n] x [n, k]; grad_w = g^T x: [n, m] x [m, k].
      std::vector<double> expected_x(grad_x.size()), scale_x(grad_x.size());
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < k; ++j) {
          double sum = 0.0, magnitude = 0.0;
          for (int64_t p = 0; p < n; ++p) {
            const double t = double(g[static_cast<size_t>(i * n + p)]) *
                             double(w[static_cast<size_t>(p * k + j)]);
            sum += t;
            magnitude += std::abs(t);
          }
          expected_x[static_cast<size_t>(i * k + j)] = sum;
          scale_x[static_cast<size_t>(i * k + j)] = magnitude;
        }
      std::vector<double> expected_w(grad_w.size()), scale_w(grad_w.size());
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < k; ++j) {
          double sum = 0.0, magnitude = 0.0;
          for (int64_t r = 0; r < m; ++r) {
            const double t = double(g[static_cast<size_t>(r * n + i)]) *
                             double(x[static_cast<size_t>(r * k + j)]);
            sum += t;
            magnitude += std::abs(t);
          }
          expected_w[static_cast<size_t>(i * k + j)] = sum;
          scale_w[static_cast<size_t>(i * k + j)] = magnitude;
        }
      // grad_x: f32 dot products of n <= 37 terms, ~37 * 6e-8 = 2.2e-6 of the
      // sum of magnitudes. grad_w: 40,000 products summed as gemm_at_b does,
      // in 256-row chunks added into 4,096-row slices (the bound of the test
      // above, 2e-5). std::max passes over a NaN, so a NaN left in an output
      // is looked for on its own.
      const double error_x = worst_scaled_error(grad_x, k, expected_x, scale_x, m, k);
      const double error_w = worst_scaled_error(grad_w, k, expected_w, scale_w, n, k);
      MESSAGE("worst scaled error: grad_x " << error_x << ", grad_w " << error_w);
      CHECK(error_x < 3e-6);
      CHECK(error_w < 2e-5);
      CHECK(std::none_of(grad_x.begin(), grad_x.end(), [](float v) { return std::isnan(v); }));
      CHECK(std::none_of(grad_w.begin(), grad_w.end(), [](float v) { return std::isnan(v); }));
    }
  }
  omp_set_num_threads(saved_threads);
}
