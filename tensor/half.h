// IEEE 754 binary16 ("half", f16) as a storage type, with conversions to and
// from float that round to nearest even and keep inf, nan and subnormals.
// The arithmetic happens in float; Half only stores the 16 bits.
#pragma once

#include <cstdint>

namespace b3 {

uint16_t float_to_half_bits(float value);
float half_bits_to_float(uint16_t bits);

struct Half {
  uint16_t bits = 0;

  Half() = default;
  explicit Half(float value) : bits(float_to_half_bits(value)) {}
  static Half from_bits(uint16_t raw) {
    Half h;
    h.bits = raw;
    return h;
  }
  explicit operator float() const { return half_bits_to_float(bits); }
};

}  // namespace b3
