// CPU kernels that move elements between two strided tensors of the same
// shape, converting the element type on the way (any pair of DTypes).
#pragma once

#include "tensor/tensor.h"

namespace b3::cpu {

// dst[i] = convert(src[i]) for every logical index i.
void copy_strided(Tensor& dst, const Tensor& src);

// Converts one value between element types; f16 goes through float (so
// f64 -> f16 rounds twice, as c10::Half(double) does in PyTorch). Floating ->
// integer truncates toward zero like static_cast; a value outside the integer
// type's range (or nan) is undefined behaviour there, as in PyTorch's CPU
// kernels: callers keep such values in range.
template <typename To, typename From>
inline To convert_value(From value) {
  if constexpr (std::is_same_v<From, Half>) {
    return convert_value<To>(static_cast<float>(value));
  } else if constexpr (std::is_same_v<To, Half>) {
    return Half(static_cast<float>(value));
  } else {
    return static_cast<To>(value);
  }
}

}  // namespace b3::cpu
