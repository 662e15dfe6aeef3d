// cross_entropy on CUDA: the forward writes the loss and each row's
// logsumexp (layers/loss_cuda.h); the autograd node saves the logits, the
// targets and those logsumexps, and its backward recomputes the softmax from
// them in one kernel, scaled by the upstream gradient read on the device.
#include "layers/loss_cuda_op.h"

#include <cstdint>
#include <vector>

#include "autograd/node.h"
#include "layers/graph_input.h"
#include "layers/loss_cuda.h"
#include "tensor/cuda_tensor.h"
#include "tensor/half.h"

namespace b3::cuda_op {

namespace {

// Calls f(Logit{}, Index{}) with the element types of the logits (f32 or
// f16) and of the targets (i64 or i32); the dtypes were checked before.
template <typename F>
void dispatch_logits_and_targets(DType logits, DType targets, F&& f) {
  if (logits == DType::f16) {
    if (targets == DType::i64) {
      f(Half{}, int64_t{});
    } else {
      f(Half{}, int32_t{});
    }
  } else {
    if (targets == DType::i64) {
      f(float{}, int64_t{});
    } else {
      f(float{}, int32_t{});
    }
  }
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& target) {
  cuda::require_same_cuda_device("cross_entropy", {logits, target});
  cuda::require_cuda_float("cross_entropy", logits);
  const Tensor z = logits.detach().contiguous();
  const Tensor t = target.detach().contiguous();
  const int64_t batch = z.size(0);
  const int64_t classes = z.size(1);
  const TensorOptions f32_options = TensorOptions(DType::f32).with_device(z.device());
  Tensor row_logsumexp = empty({batch}, f32_options);
  Tensor loss = empty({}, f32_options);

  dispatch_logits_and_targets(z.dtype(), t.dtype(), [&](auto logit_tag, auto index_tag) {
    using Logit = decltype(logit_tag);
    using Index = decltype(index_tag);
    cuda::cross_entropy_forward(static_cast<const Logit*>(z.data_ptr()),
                                static_cast<const Index*>(t.data_ptr()), batch, classes,
                                static_cast<float*>(row_logsumexp.data_ptr()),
                                static_cast<float*>(loss.data_ptr()), cuda::stream_of(z));
  });

  if (should_record({logits})) {
    record_lambda(
        loss, "CrossEntropyCudaBackward", {graph_input(logits)},
        [z, t, row_logsumexp, batch, classes](const Tensor& grad_out) {
          cuda::require_same_cuda_device("cross_entropy backward", {grad_out, z});
          // The upstream gradient stays on the device: one f32, read by the kernel.
          const Tensor g =
              (grad_out.dtype() == DType::f32 ? grad_out : grad_out.to(DType::f32)).contiguous();
          Tensor grad = empty(z.shape(), TensorOptions(z.dtype()).with_device(z.device()));
          dispatch_logits_and_targets(z.dtype(), t.dtype(), [&](auto logit_tag, auto index_tag) {
            using Logit = decltype(logit_tag);
            using Index = decltype(index_tag);
            cuda::cross_entropy_backward(static_cast<const Logit*>(z.data_ptr()),
                                         static_cast<const Index*>(t.data_ptr()),
                                         static_cast<const float*>(row_logsumexp.data_ptr()),
                                         static_cast<const float*>(g.data_ptr()), batch, classes,
                                         static_cast<Logit*>(grad.data_ptr()), cuda::stream_of(z));
          });
          return std::vector<Tensor>{grad};
        });
  }
  return loss;
}

}  // namespace b3::cuda_op
