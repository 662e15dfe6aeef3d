// The fused SGD update (optim/sgd_cuda.h), following the CPU loop in
// optim/sgd.cpp operation for operation, in f32.
#include "optim/sgd_cuda.h"

#include <stdexcept>
#include <string>

#include "optim/multi_tensor_cuda.cuh"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cuda_kernels.cuh"

namespace b3::cuda {

namespace {

struct SgdConstants {
  float lr;
  float momentum;
  float one_minus_dampening;
  float weight_decay;
  bool use_momentum;
  bool nesterov;
};

template <typename G>
__global__ void sgd_kernel(MultiTensorView view, SgdConstants k, const int64_t* __restrict__ step,
                           const LossScaleState* __restrict__ scaler) {
  if (scaler != nullptr && scaler->found_inf != 0) return;  // the step is skipped
  const float inv_scale = detail::gradient_multiplier(scaler);
  const bool first_step = *step == 0;
  detail::for_each_chunk(view, [&](int32_t tensor, int64_t start, int64_t count) {
    float* p = detail::table_pointer<float>(view, tensor, 0) + start;
    const G* g = detail::table_pointer<const G>(view, tensor, 1) + start;
    float* buf = k.use_momentum ? detail::table_pointer<float>(view, tensor, 2) + start : nullptr;
    __half* copy = detail::table_pointer<__half>(view, tensor, 3);
    if (copy != nullptr) copy += start;
    for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
      float d = detail::to_float(g[i]) * inv_scale;
      if (k.weight_decay != 0.0f) d += k.weight_decay * p[i];
      if (buf != nullptr) {
        buf[i] = first_step ? d : k.momentum * buf[i] + k.one_minus_dampening * d;
        d = k.nesterov ? d + k.momentum * buf[i] : buf[i];
      }
      const float param = p[i] - k.lr * d;
      p[i] = param;
      if (copy != nullptr) copy[i] = __float2half_rn(param);
    }
  });
}

}  // namespace

void sgd_step(const MultiTensorTable& table, DType grad_dtype, const SgdStepOptions& options,
              int64_t* step, const LossScaleState* scaler, const Stream& stream) {
  const char* op = "cuda::sgd_step";
  const SgdStepOptions& o = options;
  if (!(o.lr >= 0.0) || !(o.momentum >= 0.0) || !(o.weight_decay >= 0.0)) {
    throw std::invalid_argument(std::string(op) + ": needs lr, momentum, weight_decay >= 0");
  }
  if (o.nesterov && (o.momentum <= 0.0 || o.dampening != 0.0)) {
    throw std::invalid_argument(std::string(op) +
                                ": Nesterov momentum requires a momentum and zero dampening");
  }
  detail::check_optimizer_table(table, "SGD", kSgdLists, "param, grad, momentum_buffer, f16 copy",
                                grad_dtype, step, stream, op);
  const bool use_momentum = o.momentum != 0.0;
  for (int64_t t = 0; t < table.tensors(); ++t) {
    if (table.numels[static_cast<size_t>(t)] == 0) continue;
    if (table.pointer(t, 0) == nullptr || table.pointer(t, 1) == nullptr ||
        (use_momentum && table.pointer(t, 2) == nullptr)) {
      throw std::invalid_argument(std::string(op) + ": tensor " + std::to_string(t) +
                                  " lacks a parameter, gradient or momentum buffer pointer");
    }
  }
  SgdConstants k;
  k.lr = static_cast<float>(o.lr);
  k.momentum = static_cast<float>(o.momentum);
  k.one_minus_dampening = static_cast<float>(1.0 - o.dampening);
  k.weight_decay = static_cast<float>(o.weight_decay);
  k.use_momentum = use_momentum;
  k.nesterov = o.nesterov;

  detail::launch_optimizer_step(table, grad_dtype, sgd_kernel<float>, sgd_kernel<__half>, k, step,
                                scaler, stream, "sgd_kernel");
}

}  // namespace b3::cuda
