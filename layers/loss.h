// Cross-entropy loss from logits, as torch.nn.functional.cross_entropy with
// its defaults (reduction "mean", no class weights, no label smoothing):
//   loss = (1/N) sum_n [ logsumexp(z_n) - z_n[t_n] ]
// with logsumexp computed stably as m + log(sum_c exp(z_nc - m)), m = max_c z_nc,
// so logits like +-1000 give finite, exact results. Backward:
//   dL/dz_nc = (softmax(z_n)_c - [c == t_n]) * g / N
// logits [N, classes] f32 or f64; target [N] class indices, i64 or i32.
// Unlike PyTorch there is no ignore_index: every target must lie in
// [0, classes) (PyTorch's default ignore_index -100 is an error here).
// The result is a one-element tensor of shape [] in the logits' dtype; the
// per-row sums run in double for either dtype. On CUDA (layers/loss_cuda.h)
// logits are f32 or f16 and the loss is always f32 (as under autocast);
// targets from the CPU are range-checked there, targets already on the
// device cannot be (an out-of-range target makes the loss NaN).
#pragma once

#include <string>

#include "tensor/tensor.h"

namespace b3 {

Tensor cross_entropy(const Tensor& logits, const Tensor& target);

// nn.CrossEntropyLoss(). Not a Module: it takes two inputs (logits and the
// integer targets) and has no parameters, so it is a plain callable class:
//   CrossEntropyLoss criterion;  Tensor loss = criterion(logits, labels);
class CrossEntropyLoss {
 public:
  Tensor forward(const Tensor& logits, const Tensor& target) const {
    return cross_entropy(logits, target);
  }
  Tensor operator()(const Tensor& logits, const Tensor& target) const {
    return forward(logits, target);
  }
  std::string describe() const { return "CrossEntropyLoss(reduction=mean)"; }
};

}  // namespace b3
