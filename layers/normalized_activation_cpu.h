// The activations that can follow a per-channel normalization, written once
// for scalars and vectors (GCC vector extensions) alike, and the map
// act(x * scale + shift) itself: BatchNorm's CPU kernels (forward and
// backward, batchnorm2d_cpu.cpp) and the convolutions' output epilogue
// (conv2d_cpu.h) evaluate the same expressions, so a value normalized while
// a convolution stores it has the bits of one normalized in a separate pass.
// value(y) is the forward, gradient(y, g) = g * act'(y) the backward, both
// with PyTorch's definitions (layers/activations.h).
#pragma once

#include <stdexcept>
#include <string>

#include "layers/activations.h"
#include "layers/activations_cpu.h"

namespace b3::cpu {

struct Identity {
  template <typename V>
  static V value(V y) {
    return y;
  }
  template <typename V>
  static V gradient(V, V g) {
    return g;
  }
};

struct Relu {
  template <typename V>
  static V value(V y) {
    return y > 0 ? y : 0;
  }
  template <typename V>
  static V gradient(V y, V g) {
    return y > 0 ? g : 0;
  }
};

struct Hardswish {
  template <typename V>
  static V value(V y) {
    return y * relu6_of_x_plus_3(y) / 6;
  }
  template <typename V>
  static V gradient(V y, V g) {
    // 0.5f is exact in float and double, and keeps a float scalar in float.
    const V slope = y < -3 ? 0 : (y > 3 ? 1 : y / 3 + 0.5f);
    return g * slope;
  }
};

// Calls fn(Act{}) with the functor of `kind` (none, relu or hardswish).
template <typename Fn>
void with_activation(Activation kind, const Fn& fn) {
  switch (kind) {
    case Activation::none: fn(Identity{}); return;
    case Activation::relu: fn(Relu{}); return;
    case Activation::hardswish: fn(Hardswish{}); return;
    case Activation::hardsigmoid: break;
  }
  throw std::invalid_argument(std::string("cpu::batch_norm: activation ") + activation_name(kind) +
                              " is not fused (none, relu or hardswish)");
}

// act(x * scale + shift), the normalization's one multiply-add per element.
template <typename Act>
struct ScaleShiftActivation {
  template <typename V>
  V operator()(V x, V scale, V shift) const {
    return Act::value(x * scale + shift);
  }
};

// ScaleShiftActivation of the activation `kind`, chosen at run time (for a
// kernel that stores a few vectors per choice: the branch is predictable).
template <typename V>
inline V scale_shift_activation(Activation kind, V x, V scale, V shift) {
  switch (kind) {
    case Activation::relu: return ScaleShiftActivation<Relu>{}(x, scale, shift);
    case Activation::hardswish: return ScaleShiftActivation<Hardswish>{}(x, scale, shift);
    default: return ScaleShiftActivation<Identity>{}(x, scale, shift);
  }
}

// What a kernel applies to each value v of channel (or column) c of its
// output before it stores it: act(v * scale[c] + shift[c]) (+ residual),
// BatchNorm in evaluation mode, the activation after it and a block's
// residual connection, in the producing kernel's own pass over its output
// (conv2d_cpu.h, gemm_cpu.h). No scale: nothing.
template <typename T>
struct OutputEpilogue {
  const T* scale = nullptr;  // [channels], with shift; null: no epilogue
  const T* shift = nullptr;  // [channels]
  Activation activation = Activation::none;
  // Added after the activation, element for element: laid out as the
  // output (the same row stride), pointing at its first element; or null.
  const T* residual = nullptr;
  bool active() const { return scale != nullptr; }
  // The epilogue of the output from element `offset` on (of the residual),
  // whose first column is channel `first_channel`.
  OutputEpilogue at(int64_t offset, int64_t first_channel) const {
    if (!active()) return *this;
    return OutputEpilogue{scale + first_channel, shift + first_channel, activation,
                          residual != nullptr ? residual + offset : nullptr};
  }
};

}  // namespace b3::cpu
