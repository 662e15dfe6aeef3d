// Cross-entropy: per row, a stable log-softmax (subtract the row max, sum the
// exponentials in double); the autograd node saves the softmax probabilities
// and the targets, so its backward is one subtraction and one scaling.
// CUDA logits go to loss_cuda_op.cpp (targets from the CPU are range-checked
// here and uploaded; targets already on the device cannot be checked without
// waiting for it).
#include "layers/loss.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <stdexcept>
#include <vector>

#include "autograd/node.h"
#include "layers/graph_input.h"
#include "layers/loss_cuda_op.h"
#include "tensor/cuda_tensor.h"
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

// The targets as int64, each checked against the class count.
std::vector<int64_t> checked_targets(const Tensor& target, int64_t classes) {
  std::vector<int64_t> indices(static_cast<size_t>(target.numel()));
  const Tensor dense = target.detach().contiguous();
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
  return indices;
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& target) {
  const bool on_cuda = (logits.defined() && logits.device().is_cuda()) ||
                       (target.defined() && target.device().is_cuda());
  if (on_cuda) {
    cuda::require_same_cuda_device("cross_entropy", {logits});  // e.g. CPU logits, CUDA targets
    check_arguments(logits, target, true);
    if (target.device().is_cpu()) {
      // Checked on the host, where they are, then uploaded (on the compute
      // stream, so the kernels see them). A device target is not checked: that
      // would wait for the device; an out-of-range one makes the loss NaN.
      checked_targets(target, logits.size(1));
      return cuda_op::cross_entropy(logits, target.to(logits.device()));
    }
    return cuda_op::cross_entropy(logits, target);
  }
  check_arguments(logits, target, false);
  const int64_t batch = logits.size(0);
  const int64_t classes = logits.size(1);
  const std::vector<int64_t> targets = checked_targets(target, classes);
  const Tensor z = logits.detach().contiguous();
  Tensor probabilities = empty(z.shape(), TensorOptions(z.dtype()));
  std::vector<double> row_loss(static_cast<size_t>(batch));

  dispatch_float(z.dtype(), "cross_entropy", [&](auto tag) {
    using T = decltype(tag);
    const T* zp = z.data<T>();
    T* pp = probabilities.data<T>();
#pragma omp parallel for if (batch * classes > (1 << 15))
    for (int64_t n = 0; n < batch; ++n) {
      const T* row = zp + n * classes;
      T* prob = pp + n * classes;
      const double row_max = static_cast<double>(*std::max_element(row, row + classes));
      double exp_sum = 0.0;
      for (int64_t c = 0; c < classes; ++c)
        exp_sum += std::exp(static_cast<double>(row[c]) - row_max);
      const double log_sum = std::log(exp_sum);  // logsumexp(z_n) = row_max + log_sum
      for (int64_t c = 0; c < classes; ++c) {
        prob[c] = static_cast<T>(std::exp(static_cast<double>(row[c]) - row_max - log_sum));
      }
      // logsumexp - z_t, written so that the large row_max cancels first.
      row_loss[static_cast<size_t>(n)] =
          log_sum - (static_cast<double>(row[targets[static_cast<size_t>(n)]]) - row_max);
    }
  });
  double total = 0.0;  // summed in row order: the same result for any thread count
  for (double l : row_loss) total += l;
  Tensor loss = full({}, total / static_cast<double>(batch), TensorOptions(z.dtype()));

  if (should_record({logits})) {
    record_lambda(loss, "CrossEntropyBackward", {graph_input(logits)},
                  [probabilities, targets, batch, classes](const Tensor& grad_out) {
                    const double scale = grad_out.item() / static_cast<double>(batch);
                    Tensor grad = empty(probabilities.shape(), probabilities.dtype());
                    dispatch_float(grad.dtype(), "cross_entropy backward", [&](auto tag) {
                      using T = decltype(tag);
                      const T* prob = probabilities.data<T>();
                      T* gz = grad.data<T>();
#pragma omp parallel for if (batch * classes > (1 << 15))
                      for (int64_t n = 0; n < batch; ++n) {
                        for (int64_t c = 0; c < classes; ++c) {
                          const int64_t i = n * classes + c;
                          const double onehot = c == targets[static_cast<size_t>(n)] ? 1.0 : 0.0;
                          gz[i] = static_cast<T>((static_cast<double>(prob[i]) - onehot) * scale);
                        }
                      }
                    });
                    return std::vector<Tensor>{grad};
                  });
  }
  return loss;
}

}  // namespace b3
