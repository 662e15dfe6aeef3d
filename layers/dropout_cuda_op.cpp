// dropout on CUDA: upload the host-drawn mask laid out exactly like the
// input (so the multiply is one flat loop over both buffers), multiply, and
// record a node that multiplies the incoming gradient by the same mask.
// The upload is the only host-to-device traffic; nothing waits for the device.
#include "layers/dropout_cuda_op.h"

#include <vector>

#include "autograd/node.h"
#include "layers/dropout_cuda.h"
#include "layers/graph_input.h"
#include "tensor/cuda_tensor.h"
#include "tensor/half.h"
#include "tensor/ops.h"

namespace b3::cuda_op {

namespace {

// out = a * b over identically laid out dense tensors on one CUDA device.
Tensor multiply_same_layout(const Tensor& a, const Tensor& b) {
  Tensor out = empty_strided_like(a);
  const cuda::Stream stream = cuda::stream_of(a);
  if (a.dtype() == DType::f16) {
    cuda::apply_dropout_mask(static_cast<const Half*>(a.data_ptr()),
                             static_cast<const Half*>(b.data_ptr()),
                             static_cast<Half*>(out.data_ptr()), a.numel(), stream);
  } else {
    cuda::apply_dropout_mask(static_cast<const float*>(a.data_ptr()),
                             static_cast<const float*>(b.data_ptr()),
                             static_cast<float*>(out.data_ptr()), a.numel(), stream);
  }
  return out;
}

}  // namespace

Tensor dropout(const Tensor& input, const Tensor& logical_mask) {
  cuda::require_same_cuda_device("dropout", {input});
  cuda::require_cuda_float("dropout", input);
  const Tensor x = input.is_dense() ? input.detach() : input.detach().contiguous();

  // The mask in x's dtype and exact strides: copy_ converts and lays it out.
  Tensor mask = empty_strided_like(x);
  mask.copy_(logical_mask);
  Tensor out = multiply_same_layout(x, mask);

  if (should_record({input})) {
    const Tensor saved_mask = mask;
    record_lambda(
        out, "DropoutCudaBackward", {graph_input(input)}, [saved_mask](const Tensor& grad_out) {
          cuda::require_same_cuda_device("dropout backward", {grad_out, saved_mask});
          const Tensor g =
              grad_out.dtype() == saved_mask.dtype() ? grad_out : grad_out.to(saved_mask.dtype());
          return std::vector<Tensor>{multiply_same_layout(align_layout(g, saved_mask), saved_mask)};
        });
  }
  return out;
}

}  // namespace b3::cuda_op
