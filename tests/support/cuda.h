// Helpers for the CUDA test suites (header-only, no CUDA header, so the
// suites compile in a CPU-only build too):
//   - skip_unless_cuda_device(): the first line of every test case that needs
//     a GPU; without one it prints "SKIPPED: no CUDA device (...)" and exits
//     with kSkipExitCode (77), which CTest reports as "Skipped";
//   - skip_unless_cuda_build(): for cases that only exercise the launchers'
//     argument checks, which throw before touching the device;
//   - DeviceBuffer<T>: device memory from b3's allocator with upload,
//     download and poison (fill with NaN, or 0xA5 bytes for integers), so an
//     element a kernel forgot to write fails the comparison;
//   - seeded random inputs, f16 rounding, and check_within(), which compares
//     element by element against a reference with a bound per element and
//     reports the worst offenders.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "tensor/activation_layout.h"
#include "tensor/allocator.h"
#include "tensor/cuda_stream.h"
#include "tensor/device.h"
#include "tensor/half.h"
#include "tests/support/python.h"

namespace b3::test {

// f16's unit roundoff: rounding to nearest changes a normal value by at most
// this fraction of itself (11 significant bits).
inline constexpr double kHalfUnitRoundoff = 1.0 / 2048.0;  // 2^-11 ~ 4.9e-4
// Half the spacing of f16 subnormals: the most rounding changes a value below
// f16's smallest normal (2^-14).
inline constexpr double kHalfSubnormalRounding = 1.0 / 33554432.0;  // 2^-25
// f32's unit roundoff.
inline constexpr double kFloatUnitRoundoff = 1.0 / 16777216.0;  // 2^-24 ~ 6e-8

[[noreturn]] inline void exit_skipped(const std::string& reason) {
  std::cout << "SKIPPED: " << reason << std::endl;
  std::exit(kSkipExitCode);
}

inline void skip_unless_cuda_build() {
  if (!built_with_cuda()) {
    exit_skipped("no CUDA backend (b3 was built without CUDA; configure with -DB3_CUDA=ON)");
  }
}

inline void skip_unless_cuda_device() {
  if (!built_with_cuda()) {
    exit_skipped("no CUDA device (b3 was built without CUDA; configure with -DB3_CUDA=ON)");
  }
  if (cuda_device_count() == 0) {
    exit_skipped("no CUDA device (cudaGetDeviceCount: " + cuda_unavailable_reason() + ")");
  }
}

template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(int64_t count, int device = 0) : count_(count), device_(device) {
    REQUIRE(count >= 0);
    const Device where = Device::cuda(device);
    // At least one element, so that data() is never null.
    allocation_ = allocate(static_cast<size_t>(std::max<int64_t>(count, 1)) * sizeof(T), where,
                           default_allocation(where));
  }
  explicit DeviceBuffer(const std::vector<T>& host, int device = 0)
      : DeviceBuffer(static_cast<int64_t>(host.size()), device) {
    upload(host);
  }

  T* data() { return static_cast<T*>(allocation_.data); }
  const T* data() const { return static_cast<const T*>(allocation_.data); }
  int64_t size() const { return count_; }

  void upload(const std::vector<T>& host) {
    REQUIRE(static_cast<int64_t>(host.size()) == count_);
    if (count_ == 0) return;
    copy_bytes_cuda(data(), Device::cuda(device_), host.data(), Device::cpu(), bytes());
  }
  // Waits for the device's compute stream, then copies back.
  std::vector<T> download() const {
    std::vector<T> host(static_cast<size_t>(count_));
    if (count_ == 0) return host;
    copy_bytes_cuda(host.data(), Device::cpu(), data(), Device::cuda(device_), bytes());
    return host;
  }
  // Fills with NaN (floating types) or 0xA5 bytes (integers): a value no
  // kernel writes by accident.
  void poison() { upload(std::vector<T>(static_cast<size_t>(count_), poison_value())); }

  static T poison_value() {
    if constexpr (std::is_same_v<T, float>) return std::numeric_limits<float>::quiet_NaN();
    if constexpr (std::is_same_v<T, double>) return std::numeric_limits<double>::quiet_NaN();
    if constexpr (std::is_same_v<T, Half>) return Half::from_bits(0x7E00);  // f16 NaN
    if constexpr (std::is_integral_v<T>) {
      T value;
      std::memset(&value, 0xA5, sizeof(T));
      return value;
    }
    return T{};
  }

 private:
  size_t bytes() const { return static_cast<size_t>(count_) * sizeof(T); }
  Allocation allocation_;
  int64_t count_ = 0;
  int device_ = 0;
};

// n values from a normal distribution (mean, stddev), seeded.
inline std::vector<float> random_normal(size_t n, uint32_t seed, double stddev = 1.0,
                                        double mean = 0.0) {
  std::mt19937 engine(seed);
  std::normal_distribution<double> normal(mean, stddev);
  std::vector<float> values(n);
  for (float& v : values) v = static_cast<float>(normal(engine));
  return values;
}

inline std::vector<Half> to_half(const std::vector<float>& values) {
  std::vector<Half> out;
  out.reserve(values.size());
  for (float v : values) out.push_back(Half(v));
  return out;
}

inline std::vector<float> to_float(const std::vector<Half>& values) {
  std::vector<float> out;
  out.reserve(values.size());
  for (Half v : values) out.push_back(static_cast<float>(v));
  return out;
}

inline std::vector<float> to_float(const std::vector<float>& values) { return values; }

// The values rounded to f16 and back: exactly what an f16 kernel reads.
inline std::vector<float> round_to_half(const std::vector<float>& values) {
  return to_float(to_half(values));
}

inline std::vector<double> to_double(const std::vector<float>& values) {
  return std::vector<double>(values.begin(), values.end());
}

// Checks |actual[i] - expected[i]| <= bound[i] for every i (NaN never
// passes); on failure reports how many elements failed and the worst five.
inline void check_within(const std::vector<float>& actual, const std::vector<double>& expected,
                         const std::vector<double>& bound, const std::string& what) {
  REQUIRE(actual.size() == expected.size());
  REQUIRE(bound.size() == expected.size());
  struct Miss {
    size_t index;
    double excess;
  };
  std::vector<Miss> misses;
  double worst_ratio = 0.0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double error = std::abs(static_cast<double>(actual[i]) - expected[i]);
    const bool ok = error <= bound[i];  // false for NaN
    if (bound[i] > 0.0 && std::isfinite(error))
      worst_ratio = std::max(worst_ratio, error / bound[i]);
    if (!ok)
      misses.push_back({i, std::isfinite(error) ? error / std::max(bound[i], 1e-300) : 1e300});
  }
  std::sort(misses.begin(), misses.end(),
            [](const Miss& a, const Miss& b) { return a.excess > b.excess; });
  std::ostringstream report;
  report << what << ": " << misses.size() << " of " << actual.size()
         << " elements outside their bound (worst error/bound among passing and failing: "
         << worst_ratio << ")";
  for (size_t k = 0; k < std::min<size_t>(misses.size(), 5); ++k) {
    const size_t i = misses[k].index;
    report << "\n  [" << i << "] got " << actual[i] << ", expected " << expected[i] << ", bound "
           << bound[i];
  }
  INFO(report.str());
  CHECK(misses.empty());
}

// A bound of rtol * max(|expected|, floor) per element.
inline std::vector<double> relative_bound(const std::vector<double>& expected, double rtol,
                                          double floor = 1.0) {
  std::vector<double> bound(expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    bound[i] = rtol * std::max(std::abs(expected[i]), floor);
  }
  return bound;
}

// The bound for an f16 output computed in f32 (within f32_bound of the exact
// value v) and rounded once to f16: rounding v' moves it by at most 2^-11 |v'|
// (or 2^-25 below f16's normal range), and |v'| <= |v| + f32_bound, so
//   |fl16(v') - v| <= 2^-11 |v| + (1 + 2^-11) f32_bound + 2^-25.
inline std::vector<double> half_output_bound(const std::vector<double>& expected,
                                             const std::vector<double>& f32_bound) {
  std::vector<double> bound(expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    bound[i] = kHalfUnitRoundoff * std::abs(expected[i]) +
               (1.0 + kHalfUnitRoundoff) * f32_bound[i] + kHalfSubnormalRounding;
  }
  return bound;
}

// Element (n, c, h, w)'s index in a dense host vector laid out as `layout`.
inline size_t index_of(const ActivationLayout& layout, int64_t n, int64_t c, int64_t h, int64_t w) {
  return static_cast<size_t>(layout.offset(n, c, h, w));
}

inline double max_abs(const std::vector<double>& values) {
  double m = 0.0;
  for (double v : values) m = std::max(m, std::abs(v));
  return m;
}

}  // namespace b3::test
