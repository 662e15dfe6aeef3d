// CPU kernels that move elements between two strided tensors of the same
// shape, converting the element type on the way (any pair of DTypes).
#pragma once

#include "tensor/tensor.h"

namespace b3::cpu {

// dst[i] = convert(src[i]) for every logical index i.
void copy_strided(Tensor& dst, const Tensor& src);

// Converts one value between element types; f16 goes through float.
template <typename To, typename From> inline To convert_value(From value) {
  if constexpr (std::is_same_v<From, Half>) {
    return convert_value<To>(static_cast<float>(value));
  } else if constexpr (std::is_same_v<To, Half>) {
    return Half(static_cast<float>(value));
  } else {
    return static_cast<To>(value);
  }
}

}  // namespace b3::cpu
