// f16 (IEEE 754 binary16): float -> half rounds to nearest even, overflows to
// inf past 65504, keeps inf, nan, signed zero and subnormals; half -> float is
// exact. Checked against references computed here from the definition
// (value = (-1)^s * 2^(e-15) * 1.m, subnormal m * 2^-24), not from b3's code.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "tensor/half.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

using namespace b3;

namespace {

// The value a half bit pattern stands for, from the definition, in double.
double reference_half_value(uint16_t bits) {
  const int sign = (bits >> 15) & 1;
  const int exponent = (bits >> 10) & 0x1f;
  const int mantissa = bits & 0x3ff;
  double magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<double>(mantissa), -24);
  } else if (exponent == 31) {
    magnitude = mantissa == 0 ? INFINITY : NAN;
  } else {
    magnitude = std::ldexp(1.0 + mantissa / 1024.0, exponent - 15);
  }
  return sign ? -magnitude : magnitude;
}

bool is_half_nan(uint16_t bits) { return (bits & 0x7c00u) == 0x7c00u && (bits & 0x3ffu) != 0; }

uint16_t bits_of(float value) { return float_to_half_bits(value); }

float float_from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Nearest half to a finite float by brute force over the sorted non-negative
// halves (0x0000 .. 0x7bff, then 65536 standing for the overflow to inf, as
// IEEE rounds with an unbounded exponent): the closer neighbour, ties to the
// even bit pattern.
struct HalfTable {
  std::vector<double> values;  // index = bit pattern, plus one entry for 65536 -> inf
  HalfTable() {
    for (uint32_t b = 0; b <= 0x7bffu; ++b)
      values.push_back(reference_half_value(static_cast<uint16_t>(b)));
    values.push_back(65536.0);  // bit pattern 0x7c00 = inf
  }
  uint16_t nearest(float f) const {
    const double x = std::abs(static_cast<double>(f));
    const uint16_t sign = std::signbit(f) ? 0x8000u : 0u;
    if (x >= 65536.0) return static_cast<uint16_t>(sign | 0x7c00u);
    const auto hi = std::lower_bound(values.begin(), values.end(), x);  // first >= x
    const size_t hi_index = static_cast<size_t>(hi - values.begin());
    if (*hi == x) return static_cast<uint16_t>(sign | hi_index);
    const size_t lo_index = hi_index - 1;
    const double below = x - values[lo_index], above = values[hi_index] - x;
    size_t pick;
    if (below < above) {
      pick = lo_index;
    } else if (above < below) {
      pick = hi_index;
    } else {
      pick = (lo_index % 2 == 0) ? lo_index : hi_index;  // tie: the even mantissa
    }
    return static_cast<uint16_t>(sign | pick);
  }
};

}  // namespace

TEST_CASE("half: rounding to nearest even at 1.0") {
  const float ulp = std::ldexp(1.0f, -10);  // spacing of halves in [1, 2)
  CHECK(bits_of(1.0f) == 0x3c00);
  CHECK(bits_of(1.0f + ulp / 2) == 0x3c00);                        // 1 + 2^-11: tie -> even (1)
  CHECK(bits_of(1.0f + 3 * ulp / 2) == 0x3c02);                    // 1 + 3*2^-11: tie -> 1 + 2^-9
  CHECK(bits_of(std::nextafter(1.0f + ulp / 2, 2.0f)) == 0x3c01);  // just past the tie: up
  CHECK(bits_of(std::nextafter(1.0f + ulp / 2, 0.0f)) == 0x3c00);  // just before: down
  CHECK(bits_of(-1.0f - ulp / 2) == 0xbc00);
  CHECK(static_cast<float>(Half(1.0f + 3 * ulp / 2)) == 1.0f + std::ldexp(1.0f, -9));
  // A tie that carries into the exponent: 2 - 2^-11 is halfway between the
  // largest half below 2 (odd pattern 0x3fff) and 2.0 (0x4000, even).
  CHECK(bits_of(2.0f - ulp / 2) == 0x4000);
}

TEST_CASE("half: the largest value, overflow, inf and nan") {
  CHECK(bits_of(65504.0f) == 0x7bff);
  CHECK(static_cast<float>(Half::from_bits(0x7bff)) == 65504.0f);
  CHECK(bits_of(65519.0f) == 0x7bff);  // below the halfway point 65520
  CHECK(bits_of(65520.0f) == 0x7c00);  // the tie rounds to even = 2^16 = overflow -> inf
  CHECK(bits_of(-65520.0f) == 0xfc00);
  CHECK(bits_of(1e10f) == 0x7c00);
  CHECK(bits_of(3.4e38f) == 0x7c00);
  CHECK(bits_of(INFINITY) == 0x7c00);
  CHECK(bits_of(-INFINITY) == 0xfc00);
  CHECK(std::isinf(static_cast<float>(Half::from_bits(0x7c00))));
  CHECK(static_cast<float>(Half::from_bits(0xfc00)) == -INFINITY);
  CHECK(is_half_nan(bits_of(NAN)));
  CHECK(is_half_nan(bits_of(-NAN)));
  // A nan whose payload sits only in the low 13 bits must not become inf.
  CHECK(is_half_nan(bits_of(float_from_bits(0x7f800001u))));
  CHECK(is_half_nan(bits_of(float_from_bits(0xff800001u))));
  CHECK(std::isnan(static_cast<float>(Half::from_bits(0x7e00))));
  CHECK(std::isnan(static_cast<float>(Half::from_bits(0x7c01))));
}

TEST_CASE("half: subnormals, underflow and signed zero") {
  const float smallest = std::ldexp(1.0f, -24);
  CHECK(bits_of(smallest) == 0x0001);
  CHECK(static_cast<float>(Half::from_bits(0x0001)) == smallest);
  CHECK(bits_of(std::ldexp(1.0f, -25)) == 0x0000);                        // tie -> even (0)
  CHECK(bits_of(std::nextafter(std::ldexp(1.0f, -25), 1.0f)) == 0x0001);  // above the tie
  CHECK(bits_of(3 * std::ldexp(1.0f, -25)) == 0x0002);                    // 1.5 * 2^-24: tie -> 2
  CHECK(bits_of(std::ldexp(1.0f, -26)) == 0x0000);
  CHECK(bits_of(-std::ldexp(1.0f, -26)) == 0x8000);  // underflow keeps the sign
  CHECK(bits_of(1e-30f) == 0x0000);
  CHECK(bits_of(std::numeric_limits<float>::denorm_min()) == 0x0000);
  // Largest subnormal, smallest normal, and the rounding between them.
  CHECK(bits_of(1023 * smallest) == 0x03ff);
  CHECK(bits_of(std::ldexp(1.0f, -14)) == 0x0400);
  CHECK(bits_of(1023.5f * smallest) == 0x0400);  // tie between 0x3ff (odd) and 0x400 (even)
  CHECK(static_cast<float>(Half::from_bits(0x03ff)) == 1023 * smallest);
  // Signed zeros.
  CHECK(bits_of(0.0f) == 0x0000);
  CHECK(bits_of(-0.0f) == 0x8000);
  const float negative_zero = static_cast<float>(Half::from_bits(0x8000));
  CHECK(negative_zero == 0.0f);
  CHECK(std::signbit(negative_zero));
}

TEST_CASE("half: all 65536 bit patterns convert to float exactly and back to the same bits") {
  int mismatched_values = 0, mismatched_round_trips = 0;
  for (uint32_t b = 0; b <= 0xffffu; ++b) {
    const uint16_t bits = static_cast<uint16_t>(b);
    const float f = half_bits_to_float(bits);
    const double expected = reference_half_value(bits);
    const uint16_t back = float_to_half_bits(f);
    if (is_half_nan(bits)) {
      if (!std::isnan(f)) ++mismatched_values;
      if (!is_half_nan(back)) ++mismatched_round_trips;  // the payload may change, nan may not
      continue;
    }
    if (static_cast<double>(f) != expected || std::signbit(f) != std::signbit(expected))
      ++mismatched_values;
    if (back != bits) ++mismatched_round_trips;
  }
  CHECK(mismatched_values == 0);
  CHECK(mismatched_round_trips == 0);
}

TEST_CASE("half: float -> half matches a brute-force nearest neighbour on sampled floats") {
  const HalfTable table;
  Generator gen(16);
  std::vector<float> samples;
  // (a) Random bit patterns with exponents around the half range (2^-27 .. 2^17).
  for (int i = 0; i < 20000; ++i) {
    const uint32_t mantissa = static_cast<uint32_t>(gen.next_u64() & 0x7fffffu);
    const uint32_t exponent = static_cast<uint32_t>(127 - 27 + gen.below(45));
    const uint32_t sign = static_cast<uint32_t>(gen.below(2)) << 31;
    samples.push_back(float_from_bits(sign | (exponent << 23) | mantissa));
  }
  // (b) Every tie point between neighbours in a sample of halves, and the
  //     floats just beside it: the cases where rounding mode matters.
  for (int i = 0; i < 5000; ++i) {
    const uint32_t b = static_cast<uint32_t>(gen.below(0x7bff));
    const float mid = static_cast<float>((reference_half_value(static_cast<uint16_t>(b)) +
                                          reference_half_value(static_cast<uint16_t>(b + 1))) /
                                         2);  // exact in float: halves have 11 bits
    samples.push_back(mid);
    samples.push_back(std::nextafter(mid, 0.0f));
    samples.push_back(std::nextafter(mid, INFINITY));
    samples.push_back(-mid);
  }
  // (c) Fully random bit patterns (mostly far outside the half range), finite only.
  for (int i = 0; i < 5000; ++i) {
    const float f = float_from_bits(static_cast<uint32_t>(gen.next_u64()));
    if (std::isfinite(f)) samples.push_back(f);
  }
  int mismatches = 0;
  float first_bad = 0.0f;
  for (float f : samples) {
    if (float_to_half_bits(f) != table.nearest(f)) {
      if (mismatches++ == 0) first_bad = f;
    }
  }
  CAPTURE(first_bad);
  CHECK(mismatches == 0);
  CHECK(samples.size() > 40000);
}

TEST_CASE("half: f16 tensors store and convert through the same rules") {
  const float ulp = std::ldexp(1.0f, -10);
  const Tensor t = from_doubles({1.0 + ulp / 2, 65519.0, 65520.0, -0.0, std::ldexp(1.0, -25), 0.1},
                                {6}, DType::f16);
  const Half* p = t.data<Half>();
  CHECK(p[0].bits == 0x3c00);
  CHECK(p[1].bits == 0x7bff);
  CHECK(p[2].bits == 0x7c00);
  CHECK(p[3].bits == 0x8000);
  CHECK(p[4].bits == 0x0000);
  CHECK(p[5].bits == bits_of(0.1f));
  const std::vector<double> back = t.to_doubles();
  CHECK(back[0] == 1.0);
  CHECK(back[1] == 65504.0);
  CHECK(back[2] == INFINITY);
  CHECK(std::signbit(back[3]));
  CHECK(back[5] == reference_half_value(bits_of(0.1f)));
  CHECK(t.to(DType::f32).to(DType::f16).to_doubles() ==
        std::vector<double>{1.0, 65504.0, INFINITY, -0.0, 0.0, back[5]});
}
