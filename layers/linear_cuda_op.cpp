// linear on CUDA tensors: y = x W^T + b through cuBLAS (layers/linear_cuda.h),
// and the autograd node (saving the input and the weight, detached, only when
// the other's gradient needs them). Nothing here waits for the device.
#include "layers/linear_cuda_op.h"

#include <vector>

#include "autograd/node.h"
#include "layers/graph_input.h"
#include "layers/linear_cuda.h"
#include "tensor/cuda_tensor.h"

namespace b3::cuda_op {

namespace {

// A detached, dense row-major tensor (the tensor itself when it already is).
Tensor dense_rows(const Tensor& t) { return t.detach().contiguous(); }

const void* pointer_or_null(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }
void* pointer_or_null(Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

}  // namespace

Tensor linear(const Tensor& input, const Tensor& weight, const Tensor& bias) {
  cuda::require_same_cuda_device("linear", {input, weight, bias});
  cuda::require_cuda_float("linear", input);
  const Tensor x = dense_rows(input);
  const Tensor w = dense_rows(weight);
  const Tensor b = bias.defined() ? dense_rows(bias) : Tensor();

  cuda::LinearGeometry geometry;
  geometry.batch = x.size(0);
  geometry.in_features = x.size(1);
  geometry.out_features = w.size(0);
  geometry.dtype = x.dtype();
  const TensorOptions options = TensorOptions(x.dtype()).with_device(x.device());
  Tensor out = empty({geometry.batch, geometry.out_features}, options);
  cuda::linear_forward(geometry, x.data_ptr(), w.data_ptr(), pointer_or_null(b), out.data_ptr(),
                       cuda::stream_of(x));

  std::vector<Tensor> inputs{input, weight};
  if (bias.defined()) inputs.push_back(bias);
  if (should_record(inputs)) {
    // The node keeps no storage of an intermediate input (e.g. an autocast copy).
    for (Tensor& t : inputs) t = graph_input(t);
    const bool need_input = input.requires_grad();
    const bool need_weight = weight.requires_grad();
    const bool need_bias = bias.defined() && bias.requires_grad();
    const bool has_bias = bias.defined();
    // x is read only for grad_weight, w only for grad_input.
    const Tensor saved_x = need_weight ? x : Tensor();
    const Tensor saved_w = need_input ? w : Tensor();
    record_lambda(
        out, "LinearCudaBackward", inputs,
        [geometry, options, saved_x, saved_w, need_input, need_weight, need_bias,
         has_bias](const Tensor& grad_out) {
          cuda::require_same_cuda_device("linear backward", {grad_out, saved_x, saved_w});
          const Tensor converted =
              grad_out.dtype() == geometry.dtype ? grad_out : grad_out.to(geometry.dtype);
          const Tensor g = dense_rows(converted);
          Tensor grad_input =
              need_input ? empty({geometry.batch, geometry.in_features}, options) : Tensor();
          Tensor grad_weight = need_weight
                                   ? empty({geometry.out_features, geometry.in_features}, options)
                                   : Tensor();
          Tensor grad_bias = need_bias ? empty({geometry.out_features}, options) : Tensor();
          cuda::linear_backward(geometry, pointer_or_null(saved_x), pointer_or_null(saved_w),
                                g.data_ptr(), pointer_or_null(grad_input),
                                pointer_or_null(grad_weight), pointer_or_null(grad_bias),
                                cuda::stream_of(g));
          std::vector<Tensor> grads{grad_input, grad_weight};
          if (has_bias) grads.push_back(grad_bias);
          return grads;
        });
  }
  return out;
}

}  // namespace b3::cuda_op
