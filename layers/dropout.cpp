// Dropout: draws the scaled mask {0, 1/(1-p)} in logical order, lays it out
// like the input, multiplies; the autograd node keeps the mask (not the
// output) and multiplies the incoming gradient by it. A CUDA input gets the
// same mask, drawn here on the host from the same generator, and is
// multiplied on the device (dropout_cuda_op.cpp): one seed, one mask, on
// either device.
#include "layers/dropout.h"

#include <sstream>
#include <stdexcept>

#include "autograd/node.h"
#include "layers/dropout_cuda_op.h"
#include "layers/graph_input.h"
#include "tensor/cuda_tensor.h"
#include "tensor/ops.h"

namespace b3 {

namespace {

void check_probability(const char* op, double p) {
  if (!(p >= 0.0 && p <= 1.0)) {  // also refuses NaN
    std::ostringstream s;
    s << op << ": probability p must be in [0, 1], got " << p;
    throw std::invalid_argument(s.str());
  }
}

// `t`'s values laid out with exactly `like`'s strides (a copy only when needed).
Tensor with_layout_of(const Tensor& t, const Tensor& like) {
  if (t.strides() == like.strides() && t.is_dense()) return t;
  Tensor out = empty_strided_like(like);
  out.copy_(t);
  return out;
}

// out[i] = a[i] * b[i] over identically laid out dense tensors.
Tensor multiply_same_layout(const char* op, const Tensor& a, const Tensor& b) {
  Tensor out = empty_strided_like(a);
  dispatch_float(a.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* pa = static_cast<const T*>(a.data_ptr());
    const T* pb = static_cast<const T*>(b.data_ptr());
    T* po = static_cast<T*>(out.data_ptr());
    const int64_t n = a.numel();
#pragma omp parallel for simd if (n > (1 << 16))
    for (int64_t i = 0; i < n; ++i) po[i] = pa[i] * pb[i];
  });
  return out;
}

// The mask in logical order, dense, on the CPU: keep with probability 1 - p
// (P(u >= p) for u uniform in [0, 1)), kept elements carry the scale. With
// p = 1 nothing is kept and the scale (infinite) is never used: the mask is
// all zeros. One uniform per element, in order, from `gen`.
Tensor draw_logical_mask(const Shape& shape, DType dtype, double p, Generator& gen) {
  Tensor logical_mask = empty(shape, TensorOptions(dtype));
  dispatch_float(dtype, "dropout", [&](auto tag) {
    using T = decltype(tag);
    const T kept = p < 1.0 ? static_cast<T>(1.0 / (1.0 - p)) : T(0);
    T* m = logical_mask.data<T>();
    for (int64_t i = 0; i < logical_mask.numel(); ++i) m[i] = gen.uniform() >= p ? kept : T(0);
  });
  return logical_mask;
}

}  // namespace

Tensor dropout(const Tensor& input, double p, bool training, Generator& gen) {
  check_probability("dropout", p);
  if (!input.defined()) throw std::invalid_argument("dropout: the input is undefined");
  if (!training || p == 0.0) return input;
  if (input.device().is_cuda()) {
    cuda::require_cuda_float("dropout", input);  // before any draw from gen
    // Drawn in f32 for f32 and f16 inputs: for f32 exactly the CPU's mask; an
    // f16 input gets it rounded to f16 (exact when 1/(1-p) is, e.g. p = 0.5, 0.2).
    return cuda_op::dropout(input, draw_logical_mask(input.shape(), DType::f32, p, gen));
  }
  require_cpu("dropout", {input});
  const Tensor x = input.is_dense() ? input.detach() : input.detach().contiguous();
  const Tensor logical_mask = draw_logical_mask(x.shape(), x.dtype(), p, gen);
  const Tensor mask = with_layout_of(logical_mask, x);
  Tensor out = multiply_same_layout("dropout", x, mask);

  if (should_record({input})) {
    record_lambda(out, "DropoutBackward", {graph_input(input)}, [mask](const Tensor& grad_out) {
      return std::vector<Tensor>{
          multiply_same_layout("dropout backward", with_layout_of(grad_out, mask), mask)};
    });
  }
  return out;
}

Dropout::Dropout(double p, uint64_t seed) : p_(p), generator_(seed) {
  check_probability("Dropout", p);
}

std::string Dropout::describe() const {
  std::ostringstream s;
  s << "Dropout(p=" << p_ << ")";
  return s.str();
}

}  // namespace b3
