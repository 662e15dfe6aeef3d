// Cross-entropy: one op for both devices. The forward kernel (loss_cpu.h,
// loss_cuda.h) writes the loss and per-row statistics of the log-softmax;
// the autograd node saves the logits, the targets and those statistics, and
// its backward kernel recomputes the softmax from them, scaled by the
// upstream gradient. CPU targets are range-checked here; a CUDA op's targets
// from the CPU are checked and uploaded, targets already on the device
// cannot be checked without waiting for it.
#include "layers/loss.h"

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "autograd/node.h"
#include "layers/graph_input.h"
#include "layers/loss_cpu.h"
#include "layers/loss_cuda.h"
#include "tensor/cuda_tensor.h"
#include "tensor/half.h"
#include "tensor/ops.h"

namespace b3 {

namespace {

// The logits' dtypes allowed depend on the device: f32/f64 on the CPU,
// f32/f16 on CUDA.
void check_arguments(const Tensor& logits, const Tensor& target, bool on_cuda) {
  if (!logits.defined() || !target.defined()) {
    throw std::invalid_argument("cross_entropy: logits and target must be defined tensors");
  }
  if (!on_cuda) require_cpu("cross_entropy", {logits, target});
  if (logits.dim() != 2) {
    throw std::invalid_argument("cross_entropy: logits must be 2-D [N, classes], got " +
                                shape_str(logits.shape()));
  }
  if (logits.size(0) == 0 || logits.size(1) == 0) {
    throw std::invalid_argument("cross_entropy: logits " + shape_str(logits.shape()) +
                                " are empty (need at least one sample and one class)");
  }
  if (target.dim() != 1 || target.size(0) != logits.size(0)) {
    throw std::invalid_argument("cross_entropy: target must be [" + std::to_string(logits.size(0)) +
                                "] to match logits " + shape_str(logits.shape()) + ", got " +
                                shape_str(target.shape()));
  }
  if (target.dtype() != DType::i64 && target.dtype() != DType::i32) {
    throw std::invalid_argument(std::string("cross_entropy: target must hold class indices as "
                                            "i64 or i32, got ") +
                                dtype_name(target.dtype()));
  }
  if (on_cuda) {
    cuda::require_cuda_float("cross_entropy", logits);
  } else {
    dispatch_float(logits.dtype(), "cross_entropy", [](auto) {});
  }
}

// Throws std::invalid_argument naming the first target outside [0, classes)
// (`target`: dense, on the CPU).
void check_targets(const Tensor& dense, int64_t classes) {
  std::vector<int64_t> indices(static_cast<size_t>(dense.numel()));
  auto read = [&](auto tag) {
    using I = decltype(tag);
    const I* p = dense.data<I>();
    for (size_t n = 0; n < indices.size(); ++n) indices[n] = static_cast<int64_t>(p[n]);
  };
  if (dense.dtype() == DType::i64) {
    read(int64_t{});
  } else {
    read(int32_t{});
  }
  for (size_t n = 0; n < indices.size(); ++n) {
    if (indices[n] < 0 || indices[n] >= classes) {
      throw std::invalid_argument("cross_entropy: target[" + std::to_string(n) +
                                  "] = " + std::to_string(indices[n]) + " is out of range for " +
                                  std::to_string(classes) + " classes (valid: 0.." +
                                  std::to_string(classes - 1) + ")");
    }
  }
}

// Calls f(Logit{}, Index{}) with the element types of the logits (f32 or f64
// on the CPU, f32 or f16 on CUDA, per kLogitsOnCuda) and of the targets (i64
// or i32, checked before).
template <bool kLogitsOnCuda, typename F>
void dispatch_logits_and_targets(DType logits, DType targets, F&& f) {
  const auto with_index = [&](auto logit) {
    if (targets == DType::i64) {
      f(logit, int64_t{});
    } else {
      f(logit, int32_t{});
    }
  };
  if constexpr (kLogitsOnCuda) {
    cuda::dispatch_cuda_float(logits, "cross_entropy", with_index);
  } else {
    dispatch_float(logits, "cross_entropy", with_index);
  }
}

// The per-row statistics the forward leaves for the backward: on the CPU
// the row max and log(sum exp(z - max)) in f64 ([N, 2]), on CUDA their sum,
// the logsumexp, in f32 ([N]) (layers/loss_cpu.h, layers/loss_cuda.h).
Tensor empty_row_statistics(const Tensor& z) {
  const int64_t batch = z.size(0);
  if (z.device().is_cuda())
    return empty({batch}, TensorOptions(DType::f32).with_device(z.device()));
  return empty({batch, 2}, TensorOptions(DType::f64));
}

// loss (a [] tensor: f32 on CUDA, the logits' dtype on the CPU) and row_statistics.
Tensor run_forward(const Tensor& z, const Tensor& t, Tensor& row_statistics) {
  const int64_t batch = z.size(0), classes = z.size(1);
  if (z.device().is_cuda()) {
    Tensor loss = empty({}, TensorOptions(DType::f32).with_device(z.device()));
    dispatch_logits_and_targets<true>(z.dtype(), t.dtype(), [&](auto logit_tag, auto index_tag) {
      using Logit = decltype(logit_tag);
      using Index = decltype(index_tag);
      cuda::cross_entropy_forward(static_cast<const Logit*>(z.data_ptr()),
                                  static_cast<const Index*>(t.data_ptr()), batch, classes,
                                  static_cast<float*>(row_statistics.data_ptr()),
                                  static_cast<float*>(loss.data_ptr()), cuda::stream_of(z));
    });
    return loss;
  }
  double loss = 0.0;
  dispatch_logits_and_targets<false>(z.dtype(), t.dtype(), [&](auto logit_tag, auto index_tag) {
    using Logit = decltype(logit_tag);
    using Index = decltype(index_tag);
    cpu::cross_entropy_forward(static_cast<const Logit*>(z.data_ptr()),
                               static_cast<const Index*>(t.data_ptr()), batch, classes,
                               row_statistics.data<double>(), &loss);
  });
  return full({}, loss, TensorOptions(z.dtype()));
}

// dL/dz for the upstream gradient grad_out (a one-element tensor; on CUDA it
// stays on the device, read there by the kernel).
Tensor run_backward(const Tensor& z, const Tensor& t, const Tensor& row_statistics,
                    const Tensor& grad_out) {
  const int64_t batch = z.size(0), classes = z.size(1);
  Tensor grad = empty(z.shape(), TensorOptions(z.dtype()).with_device(z.device()));
  if (z.device().is_cuda()) {
    cuda::require_same_cuda_device("cross_entropy backward", {grad_out, z});
    const Tensor g =
        (grad_out.dtype() == DType::f32 ? grad_out : grad_out.to(DType::f32)).contiguous();
    dispatch_logits_and_targets<true>(z.dtype(), t.dtype(), [&](auto logit_tag, auto index_tag) {
      using Logit = decltype(logit_tag);
      using Index = decltype(index_tag);
      cuda::cross_entropy_backward(static_cast<const Logit*>(z.data_ptr()),
                                   static_cast<const Index*>(t.data_ptr()),
                                   static_cast<const float*>(row_statistics.data_ptr()),
                                   static_cast<const float*>(g.data_ptr()), batch, classes,
                                   static_cast<Logit*>(grad.data_ptr()), cuda::stream_of(z));
    });
    return grad;
  }
  const double grad_loss = grad_out.item();
  dispatch_logits_and_targets<false>(z.dtype(), t.dtype(), [&](auto logit_tag, auto index_tag) {
    using Logit = decltype(logit_tag);
    using Index = decltype(index_tag);
    cpu::cross_entropy_backward(static_cast<const Logit*>(z.data_ptr()),
                                static_cast<const Index*>(t.data_ptr()),
                                row_statistics.data<double>(), grad_loss, batch, classes,
                                static_cast<Logit*>(grad.data_ptr()));
  });
  return grad;
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& target) {
  const bool on_cuda = (logits.defined() && logits.device().is_cuda()) ||
                       (target.defined() && target.device().is_cuda());
  // On CUDA the logits must be there (e.g. not CPU logits with CUDA targets);
  // targets may come from the CPU.
  if (on_cuda) cuda::require_same_cuda_device("cross_entropy", {logits});
  check_arguments(logits, target, on_cuda);
  Tensor t = target.detach().contiguous();
  if (t.device().is_cpu()) {
    // Checked on the host, where they are; a CUDA op's are then uploaded (on
    // the compute stream, so the kernels see them). A device target is not
    // checked: that would wait for the device; an out-of-range one makes the
    // loss NaN.
    check_targets(t, logits.size(1));
    if (on_cuda) t = t.to(logits.device());
  }
  if (on_cuda) cuda::require_same_cuda_device("cross_entropy", {logits, t});
  const Tensor z = logits.detach().contiguous();
  Tensor row_statistics = empty_row_statistics(z);
  Tensor loss = run_forward(z, t, row_statistics);

  if (should_record({logits})) {
    record_lambda(loss, "CrossEntropyBackward", {graph_input(logits)},
                  [z, t, row_statistics](const Tensor& grad_out) {
                    return std::vector<Tensor>{run_backward(z, t, row_statistics, grad_out)};
                  });
  }
  return loss;
}

}  // namespace b3
