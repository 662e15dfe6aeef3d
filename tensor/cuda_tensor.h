// What the ops' CUDA paths share when they hand Tensors to the raw-pointer
// launchers (layers/*_cuda.h): the stream a tensor's work goes to, the
// f32/f16 dispatch, and argument checks with clear errors. (A 4-D tensor's
// geometry, for either device, is tensor/activation_layout.h.)
// Compiles in every build (no CUDA header): in a CPU-only build no tensor can
// live on a CUDA device, so these paths are never reached there.
#pragma once

#include <initializer_list>
#include <stdexcept>
#include <string>

#include "tensor/cuda_stream.h"
#include "tensor/half.h"
#include "tensor/tensor.h"

namespace b3::cuda {

// The compute stream of the device `t` lives on (t must be on a CUDA device).
Stream stream_of(const Tensor& t);

// Throws std::invalid_argument naming `op` unless every defined tensor is on
// the same CUDA device as the first.
void require_same_cuda_device(const char* op, std::initializer_list<Tensor> tensors);

// Throws std::invalid_argument naming `op` unless t's dtype is f32 or f16 (the
// dtypes b3's CUDA kernels compute in; f64 stays on the CPU).
void require_cuda_float(const char* op, const Tensor& t);

// Calls fn(float{}) or fn(Half{}) for an f32 or f16 dtype (the element types
// of b3's CUDA launchers); throws std::invalid_argument naming `op` otherwise.
template <typename Fn>
void dispatch_cuda_float(DType dtype, const char* op, Fn&& fn) {
  if (dtype == DType::f32) {
    fn(float{});
  } else if (dtype == DType::f16) {
    fn(Half{});
  } else {
    throw std::invalid_argument(std::string(op) + ": dtype " + dtype_name(dtype) +
                                " is not supported on CUDA (use f32 or f16)");
  }
}

}  // namespace b3::cuda

namespace b3 {

// Where an op with these arguments runs: true (on CUDA) when any defined
// tensor lives on a CUDA device, and then every defined one must be on that
// device (std::invalid_argument naming `op` otherwise, e.g. a weight left on
// the CPU); false when all are on the CPU.
bool runs_on_cuda(const char* op, std::initializer_list<Tensor> tensors);

}  // namespace b3
