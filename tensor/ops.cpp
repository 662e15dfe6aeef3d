// Elementwise ops and full reductions, CPU kernels plus their autograd nodes.
#include "tensor/ops.h"

#include <stdexcept>

#include "autograd/node.h"
#include "tensor/convert_cuda.h"
#include "tensor/cuda_stream.h"
#include "tensor/cuda_tensor.h"
#include "tensor/elementwise_cpu.h"
#include "tensor/half.h"

namespace b3 {

void require_cpu(const char* op, std::initializer_list<Tensor> tensors) {
  for (const Tensor& t : tensors) {
    if (t.defined() && !t.device().is_cpu()) {
      throw std::runtime_error(std::string(op) + ": not implemented on " + t.device().str() +
                               " yet (CPU only in this build of b3)");
    }
  }
}

static void check_same(const char* op, const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) {
    throw std::invalid_argument(std::string(op) + ": shapes " + shape_str(a.shape()) + " and " +
                                shape_str(b.shape()) + " differ (b3 does not broadcast)");
  }
  if (a.dtype() != b.dtype()) {
    throw std::invalid_argument(std::string(op) + ": dtypes " + dtype_name(a.dtype()) + " and " +
                                dtype_name(b.dtype()) + " differ");
  }
  if (!(a.device() == b.device())) {
    throw std::invalid_argument(std::string(op) + ": tensors on different devices, " +
                                a.device().str() + " and " + b.device().str());
  }
}

// out = a + alpha * b on a CUDA device (f32 or f16), b laid out like a.
static Tensor add_on_cuda(const char* op, const Tensor& a_in, const Tensor& b_in, double alpha) {
  const Tensor a = a_in.is_dense() ? a_in.detach() : a_in.detach().contiguous();
  const Tensor b = align_layout(b_in.detach(), a);
  Tensor out = empty_strided_like(a);
  const cuda::Stream stream = cuda::compute_stream(a.device().index);
  cuda::dispatch_cuda_float(a.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    cuda::add(static_cast<const T*>(a.data_ptr()), static_cast<const T*>(b.data_ptr()),
              static_cast<float>(alpha), static_cast<T*>(out.data_ptr()), a.numel(), stream);
  });
  return out;
}

Tensor align_layout(const Tensor& b, const Tensor& a) {
  if (b.strides() == a.strides() && b.is_dense()) return b;
  Tensor out = empty_like(a);
  // a may be dense in any order of dims; a non-dense a (a narrow) has strides
  // that do not fit a fresh block, and then b comes back in a's suggested format.
  if (a.is_dense()) out.impl()->strides = a.strides();
  out.copy_(b);  // a plain copy; callers record autograd on their own output
  return out;
}

// out[i] = fn(a[i], b[i]) over dense, identically laid out a and b.
template <typename Fn>
static Tensor binary(const char* op, const Tensor& a_in, const Tensor& b_in, Fn fn) {
  check_same(op, a_in, b_in);
  require_cpu(op, {a_in, b_in});
  const Tensor a = a_in.is_dense() ? a_in.detach() : a_in.detach().contiguous();
  const Tensor b = align_layout(b_in.detach(), a);
  Tensor out = empty_strided_like(a);
  dispatch_float(a.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* pa = static_cast<const T*>(a.data_ptr());
    const T* pb = static_cast<const T*>(b.data_ptr());
    T* po = static_cast<T*>(out.data_ptr());
    // Vectorized, threaded, large outputs streamed (tensor/elementwise_cpu.h):
    // the residual adds and the engine's gradient sums are this loop.
    cpu::map_elements(a.numel(), po, 0, fn, pa, pb);
  });
  return out;
}

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = a.defined() && a.device().is_cuda()
                   ? (check_same("add", a, b), add_on_cuda("add", a, b, 1.0))
                   : binary("add", a, b, [](auto x, auto y) { return x + y; });
  if (should_record({a, b})) {
    record_lambda(out, "AddBackward", {a, b}, [](const Tensor& g) {
      return std::vector<Tensor>{g, g};
    });
  }
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = a.defined() && a.device().is_cuda()
                   ? (check_same("sub", a, b), add_on_cuda("sub", a, b, -1.0))
                   : binary("sub", a, b, [](auto x, auto y) { return x - y; });
  if (should_record({a, b})) {
    record_lambda(out, "SubBackward", {a, b}, [](const Tensor& g) {
      return std::vector<Tensor>{g, scale(g, -1.0)};
    });
  }
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary("mul", a, b, [](auto x, auto y) { return x * y; });
  if (should_record({a, b})) {
    const Tensor saved_a = a.detach(), saved_b = b.detach();
    record_lambda(out, "MulBackward", {a, b}, [saved_a, saved_b](const Tensor& g) {
      return std::vector<Tensor>{mul(g, saved_b), mul(g, saved_a)};
    });
  }
  return out;
}

Tensor scale(const Tensor& a, double factor) {
  Tensor out = a.detach().clone();
  out.mul_(factor);
  if (should_record({a})) {
    record_lambda(out, "ScaleBackward", {a},
                  [factor](const Tensor& g) { return std::vector<Tensor>{scale(g, factor)}; });
  }
  return out;
}

Tensor sum(const Tensor& a) {
  require_cpu("sum", {a});
  const Tensor dense = a.is_dense() ? a.detach() : a.detach().contiguous();
  Tensor out = empty({}, TensorOptions(a.dtype()));
  dispatch_float(a.dtype(), "sum", [&](auto tag) {
    using T = decltype(tag);
    const T* p = static_cast<const T*>(dense.data_ptr());
    double total = 0.0;  // accumulate in double for every input dtype
    for (int64_t i = 0; i < dense.numel(); ++i) total += static_cast<double>(p[i]);
    *out.data<T>() = static_cast<T>(total);
  });
  if (should_record({a})) {
    const Shape input_shape = a.shape();
    const MemoryFormat format = a.suggest_memory_format();
    record_lambda(out, "SumBackward", {a}, [input_shape, format](const Tensor& g) {
      const double value = g.item();
      return std::vector<Tensor>{
          full(input_shape, value, TensorOptions(g.dtype()).with_format(format))};
    });
  }
  return out;
}

Tensor mean(const Tensor& a) {
  if (a.numel() == 0) throw std::invalid_argument("mean: the tensor has no elements");
  return scale(sum(a), 1.0 / static_cast<double>(a.numel()));
}

}  // namespace b3
