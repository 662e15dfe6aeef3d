// Helpers shared by the test suites: seeded random tensors in either memory
// format, element-wise comparison with a stated tolerance, and a doctest
// check that prints gradcheck's report when it fails.
#pragma once

#include <doctest/doctest.h>

#include <vector>

#include "autograd/gradcheck.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace b3::test {

// Normal(0, 1) values in logical order, laid out in `format`.
Tensor random_tensor(const Shape& shape, Generator& gen, DType dtype = DType::f64,
                     MemoryFormat format = MemoryFormat::contiguous, double scale = 1.0);

// n values mean + stddev * Normal(0, 1), in the order `gen` draws them.
std::vector<double> normal_values(int64_t n, Generator& gen, double mean, double stddev);

// `values` (logical NCHW order) as a tensor of `dtype` laid out in `format`.
Tensor from_values(const std::vector<double>& values, const Shape& shape, DType dtype,
                   MemoryFormat format = MemoryFormat::contiguous);

// A BatchNorm layer's random per-channel state: weight ~ N(weight_mean,
// weight_stddev), bias ~ N(0, bias_stddev), running_mean ~ N(0, 0.5),
// running_var ~ 0.5 + U(0, 1), drawn in that order.
struct BatchNormState {
  std::vector<double> weight, bias, running_mean, running_var;
};
BatchNormState random_batch_norm_state(int64_t channels, Generator& gen, double weight_mean,
                                       double weight_stddev, double bias_stddev);

// Largest |a - b| / max(|b|, 1) over all elements (b is the reference);
// throws if the shapes differ.
double max_relative_error(const Tensor& actual, const std::vector<double>& expected);
double max_relative_error(const Tensor& actual, const Tensor& expected);

// CTest runs every test with OMP_NUM_THREADS=1 (parallel test processes on
// 2 cores would otherwise oversubscribe them many times over); a test that
// exercises the parallel paths of a kernel asks for threads explicitly.
void use_openmp_threads(int threads);

// Both memory formats, for DOCTEST subcases and loops.
inline const std::vector<MemoryFormat>& both_formats() {
  static const std::vector<MemoryFormat> formats{MemoryFormat::contiguous,
                                                 MemoryFormat::channels_last};
  return formats;
}

}  // namespace b3::test

// Fails the test with gradcheck's report; also insists that most points were
// really compared (a check that skips everything as a "kink" proves nothing).
#define B3_CHECK_GRADCHECK(result_expr)                                                           \
  do {                                                                                            \
    const ::b3::GradcheckResult b3_gc_ = (result_expr);                                           \
    INFO("gradcheck: checked " << b3_gc_.checked << ", skipped as kinks " << b3_gc_.skipped_kinks \
                               << ", worst error " << b3_gc_.worst_error << "\n"                  \
                               << b3_gc_.report);                                                 \
    CHECK(b3_gc_.ok);                                                                             \
    CHECK(b3_gc_.checked > 0);                                                                    \
    CHECK(b3_gc_.skipped_kinks * 10 <= b3_gc_.checked + b3_gc_.skipped_kinks);                    \
  } while (0)
