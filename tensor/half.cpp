// float <-> IEEE binary16 conversion, bit by bit.
//
// f32: 1 sign, 8 exponent (bias 127), 23 mantissa bits.
// f16: 1 sign, 5 exponent (bias 15), 10 mantissa bits; exponent 0 holds
// subnormals (value = mantissa * 2^-24), exponent 31 holds inf and nan.
#include "tensor/half.h"

#include <cstring>

namespace b3 {

uint16_t float_to_half_bits(float value) {
  uint32_t f;
  std::memcpy(&f, &value, sizeof f);
  const uint16_t sign = static_cast<uint16_t>((f >> 16) & 0x8000u);
  const uint32_t exponent = (f >> 23) & 0xffu;
  uint32_t mantissa = f & 0x7fffffu;

  if (exponent == 0xff) {  // inf or nan; keep nan a (quiet) nan
    return static_cast<uint16_t>(sign | 0x7c00u | (mantissa ? 0x200u | (mantissa >> 13) : 0u));
  }
  // Unbiased exponent, rebiased for half.
  const int32_t half_exponent = static_cast<int32_t>(exponent) - 127 + 15;
  if (half_exponent >= 31) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf

  if (half_exponent <= 0) {
    // Subnormal half (or zero). The value is (1.mantissa) * 2^(e-127); as a half
    // subnormal it is m_h * 2^-24, so m_h = (0x800000 | mantissa) >> shift.
    if (half_exponent < -10) return sign;  // below half of the smallest subnormal: +-0
    mantissa |= 0x800000u;
    const uint32_t shift = static_cast<uint32_t>(14 - half_exponent);
    uint32_t half_mantissa = mantissa >> shift;
    const uint32_t remainder = mantissa & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    if (remainder > halfway || (remainder == halfway && (half_mantissa & 1u))) ++half_mantissa;
    // A carry into bit 10 correctly yields the smallest normal number.
    return static_cast<uint16_t>(sign | half_mantissa);
  }

  // Normal half: drop 13 mantissa bits, rounding to nearest even. A carry out of
  // the mantissa increments the exponent, and at the top yields inf: both right.
  uint32_t half = (static_cast<uint32_t>(half_exponent) << 10) | (mantissa >> 13);
  const uint32_t remainder = mantissa & 0x1fffu;
  if (remainder > 0x1000u || (remainder == 0x1000u && (half & 1u))) ++half;
  return static_cast<uint16_t>(sign | half);
}

float half_bits_to_float(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  uint32_t mantissa = bits & 0x3ffu;
  uint32_t f;
  if (exponent == 0) {
    if (mantissa == 0) {
      f = sign;
    } else {
      // Subnormal: normalize. value = mantissa * 2^-24.
      int32_t e = -1;
      do {
        ++e;
        mantissa <<= 1;
      } while ((mantissa & 0x400u) == 0);
      f = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mantissa & 0x3ffu) << 13);
    }
  } else if (exponent == 31) {
    f = sign | 0x7f800000u | (mantissa << 13);
  } else {
    f = sign | ((exponent - 15 + 127) << 23) | (mantissa << 13);
  }
  float value;
  std::memcpy(&value, &f, sizeof value);
  return value;
}

}  // namespace b3
