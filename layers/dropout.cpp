// Dropout: one op for both devices. The scaled mask {0, 1/(1-p)} is drawn in
// logical order (so a seed gives one mask for either memory format), laid out
// exactly like the input, and multiplied in by the device's kernel
// (dropout_cpu.h, dropout_cuda.h); the autograd node keeps the mask (not the
// output) and multiplies the incoming gradient by it. Where it is drawn:
//   CPU:  on the host from the Generator, one uniform per element;
//   CUDA: on the device, from Philox4x32-10 (tensor/philox.h) under a key
//         that is the Generator's next 64-bit draw, so a seed still fixes
//         every mask, the host draws one number per call whatever the size,
//         and nothing is uploaded or waited for. The two devices' masks for
//         one seed differ (as PyTorch's CPU and CUDA masks do). Inside a
//         CUDA graph capture the key comes from a device slot that the graph
//         fills with the Generator's next draw before every replay
//         (tensor/cuda_graph.h), so replays draw what eager steps would.
#include "layers/dropout.h"

#include <algorithm>
#include <sstream>
#include <stdexcept>

#include "autograd/node.h"
#include "layers/dropout_cpu.h"
#include "layers/dropout_cuda.h"
#include "layers/graph_input.h"
#include "tensor/cuda_graph.h"
#include "tensor/cuda_tensor.h"
#include "tensor/half.h"
#include "tensor/ops.h"
#include "tensor/philox.h"

namespace b3 {

namespace {

void check_probability(const char* op, double p) {
  if (!(p >= 0.0 && p <= 1.0)) {  // also refuses NaN
    std::ostringstream s;
    s << op << ": probability p must be in [0, 1], got " << p;
    throw std::invalid_argument(s.str());
  }
}

// `t`'s values with exactly `like`'s strides, dtype and device (a copy, which
// converts and moves, only when one of them differs).
Tensor with_layout_of(const Tensor& t, const Tensor& like) {
  if (t.strides() == like.strides() && t.is_dense() && t.dtype() == like.dtype() &&
      t.device() == like.device()) {
    return t;
  }
  Tensor out = empty_strided_like(like);
  out.copy_(t);
  return out;
}

// out = a * mask over identically laid out dense tensors on a's device.
Tensor multiply_by_mask(const char* op, const Tensor& a, const Tensor& mask) {
  Tensor out = empty_strided_like(a);
  const int64_t n = a.numel();
  if (a.device().is_cuda()) {
    cuda::dispatch_cuda_float(a.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      cuda::apply_dropout_mask(static_cast<const T*>(a.data_ptr()),
                               static_cast<const T*>(mask.data_ptr()),
                               static_cast<T*>(out.data_ptr()), n, cuda::stream_of(a));
    });
    return out;
  }
  dispatch_float(a.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    cpu::apply_dropout_mask(static_cast<const T*>(a.data_ptr()),
                            static_cast<const T*>(mask.data_ptr()), static_cast<T*>(out.data_ptr()),
                            n);
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
    const int64_t n = logical_mask.numel();
    constexpr int64_t kChunk = 2048;  // uniforms drawn at a time (16 KiB, in L1)
    double u[kChunk];
    for (int64_t first = 0; first < n; first += kChunk) {
      const int64_t count = std::min(kChunk, n - first);
      gen.uniforms(u, count);
      for (int64_t j = 0; j < count; ++j) m[first + j] = u[j] >= p ? kept : T(0);
    }
  });
  return logical_mask;
}

// The mask drawn on x's CUDA device under the next key of `gen` (or, during
// a CUDA graph capture, the key its replay will draw), dense in logical
// order, of x's dtype (the scale rounded once to f16 for an f16 x).
Tensor draw_device_mask(const Tensor& x, double p, Generator& gen) {
  const uint64_t* key_slot = cuda::capture_random_key(x.device().index, gen);
  const uint64_t key = key_slot == nullptr ? gen.next_u64() : 0;
  Tensor logical_mask = empty(x.shape(), TensorOptions(x.dtype()).with_device(x.device()));
  const float scale = p < 1.0 ? static_cast<float>(1.0 / (1.0 - p)) : 0.0f;
  cuda::dispatch_cuda_float(x.dtype(), "dropout", [&](auto tag) {
    using T = decltype(tag);
    cuda::draw_dropout_mask(key, key_slot, philox::drop_threshold(p), scale,
                            static_cast<T*>(logical_mask.data_ptr()), logical_mask.numel(),
                            cuda::stream_of(x));
  });
  return logical_mask;
}

}  // namespace

Tensor dropout(const Tensor& input, double p, bool training, Generator& gen) {
  check_probability("dropout", p);
  if (!input.defined()) throw std::invalid_argument("dropout: the input is undefined");
  if (!training || p == 0.0) return input;
  // The dtype is checked before any draw from gen.
  if (runs_on_cuda("dropout", {input})) {
    cuda::require_cuda_float("dropout", input);
  } else {
    dispatch_float(input.dtype(), "dropout", [](auto) {});
  }
  const Tensor x = input.is_dense() ? input.detach() : input.detach().contiguous();
  const Tensor logical_mask = x.device().is_cuda()
                                  ? draw_device_mask(x, p, gen)
                                  : draw_logical_mask(x.shape(), x.dtype(), p, gen);
  const Tensor mask = with_layout_of(logical_mask, x);
  Tensor out = multiply_by_mask("dropout", x, mask);

  if (should_record({input})) {
    record_lambda(out, "DropoutBackward", {graph_input(input)}, [mask](const Tensor& grad_out) {
      const Tensor g = grad_out.dtype() == mask.dtype() ? grad_out : grad_out.to(mask.dtype());
      return std::vector<Tensor>{
          multiply_by_mask("dropout backward", with_layout_of(g, mask), mask)};
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
