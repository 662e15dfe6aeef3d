// Test helpers: random tensors and relative-error comparison.
#include "tests/support/reference.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace b3::test {

Tensor random_tensor(const Shape& shape, Generator& gen, DType dtype, MemoryFormat format,
                     double scale) {
  Tensor logical = randn(shape, gen, TensorOptions(DType::f64));
  logical.mul_(scale);
  Tensor out = empty(shape, TensorOptions(dtype).with_format(format));
  out.copy_(logical);
  return out;
}

void use_openmp_threads(int threads) { omp_set_num_threads(threads); }

std::vector<double> normal_values(int64_t n, Generator& gen, double mean, double stddev) {
  std::vector<double> v(static_cast<size_t>(n));
  for (double& e : v) e = mean + stddev * gen.normal();
  return v;
}

Tensor from_values(const std::vector<double>& values, const Shape& shape, DType dtype,
                   MemoryFormat format) {
  return from_doubles(values, shape, TensorOptions(dtype).with_format(format));
}

BatchNormState random_batch_norm_state(int64_t channels, Generator& gen, double weight_mean,
                                       double weight_stddev, double bias_stddev) {
  BatchNormState s{normal_values(channels, gen, weight_mean, weight_stddev),
                   normal_values(channels, gen, 0.0, bias_stddev),
                   normal_values(channels, gen, 0.0, 0.5),
                   {}};
  for (int64_t c = 0; c < channels; ++c) s.running_var.push_back(0.5 + gen.uniform());
  return s;
}

double max_relative_error(const Tensor& actual, const std::vector<double>& expected) {
  const std::vector<double> values = actual.to_doubles();
  if (values.size() != expected.size()) {
    throw std::invalid_argument("max_relative_error: " + std::to_string(values.size()) +
                                " values against " + std::to_string(expected.size()));
  }
  double worst = 0.0;
  for (size_t i = 0; i < values.size(); ++i) {
    const double error = std::abs(values[i] - expected[i]) / std::max(std::abs(expected[i]), 1.0);
    if (std::isnan(error)) return INFINITY;
    worst = std::max(worst, error);
  }
  return worst;
}

double max_relative_error(const Tensor& actual, const Tensor& expected) {
  if (actual.shape() != expected.shape()) {
    throw std::invalid_argument("max_relative_error: shapes " + shape_str(actual.shape()) +
                                " and " + shape_str(expected.shape()));
  }
  return max_relative_error(actual, expected.to_doubles());
}

}  // namespace b3::test
