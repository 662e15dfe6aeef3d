// The fused Adam/AdamW update (optim/adam_cuda.h). The arithmetic follows the
// CPU loop in optim/adam.cpp operation for operation, in f32, with the bias
// corrections computed once per block in double from the device step count.
#include "optim/adam_cuda.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "optim/multi_tensor_cuda.cuh"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cuda_kernels.cuh"

namespace b3::cuda {

namespace {

// Host-computed constants, rounded to f32 as the CPU loop rounds them.
struct AdamConstants {
  double lr;
  double beta1;
  double beta2;
  float beta1_f;
  float beta2_f;
  float one_minus_beta1;
  float one_minus_beta2;
  float eps;
  float l2;     // Adam: weight decay added to the gradient
  float decay;  // AdamW: p *= 1 - lr * weight_decay (1 for Adam)
};

template <typename G>
__global__ void adam_kernel(MultiTensorView view, AdamConstants k, const int64_t* __restrict__ step,
                            const LossScaleState* __restrict__ scaler) {
  if (scaler != nullptr && scaler->found_inf != 0) return;  // the step is skipped
  const float inv_scale = detail::gradient_multiplier(scaler);
  __shared__ float step_size;
  __shared__ float bias_correction2_sqrt;
  if (threadIdx.x == 0) {
    const double t = static_cast<double>(*step + 1);
    step_size = static_cast<float>(k.lr / (1.0 - pow(k.beta1, t)));
    bias_correction2_sqrt = static_cast<float>(sqrt(1.0 - pow(k.beta2, t)));
  }
  __syncthreads();
  detail::for_each_chunk(view, [&](int32_t tensor, int64_t start, int64_t count) {
    float* p = detail::table_pointer<float>(view, tensor, 0) + start;
    const G* g = detail::table_pointer<const G>(view, tensor, 1) + start;
    float* m = detail::table_pointer<float>(view, tensor, 2) + start;
    float* v = detail::table_pointer<float>(view, tensor, 3) + start;
    __half* copy = detail::table_pointer<__half>(view, tensor, 4);
    if (copy != nullptr) copy += start;
    for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
      float param = p[i] * k.decay;
      const float grad = detail::to_float(g[i]) * inv_scale + k.l2 * param;
      const float m_new = k.beta1_f * m[i] + k.one_minus_beta1 * grad;
      const float v_new = k.beta2_f * v[i] + k.one_minus_beta2 * grad * grad;
      const float denom = sqrtf(v_new) / bias_correction2_sqrt + k.eps;
      param -= step_size * m_new / denom;
      p[i] = param;
      m[i] = m_new;
      v[i] = v_new;
      if (copy != nullptr) copy[i] = __float2half_rn(param);
    }
  });
}

}  // namespace

void adam_step(const MultiTensorTable& table, DType grad_dtype, const AdamStepOptions& options,
               int64_t* step, const LossScaleState* scaler, const Stream& stream) {
  const char* op = "cuda::adam_step";
  const AdamStepOptions& o = options;
  if (!(o.lr >= 0.0) || !(o.eps >= 0.0) || !(o.beta1 >= 0.0 && o.beta1 < 1.0) ||
      !(o.beta2 >= 0.0 && o.beta2 < 1.0) || !(o.weight_decay >= 0.0)) {
    throw std::invalid_argument(std::string(op) +
                                ": needs lr, eps, weight_decay >= 0 and 0 <= beta1, beta2 < 1");
  }
  detail::check_optimizer_table(table, "Adam", kAdamLists,
                                "param, grad, exp_avg, exp_avg_sq, f16 copy", grad_dtype, step,
                                stream, op);
  const char* names[] = {"parameter", "gradient", "exp_avg", "exp_avg_sq"};
  for (int64_t t = 0; t < table.tensors(); ++t) {
    if (table.numels[static_cast<size_t>(t)] == 0) continue;
    for (int list = 0; list < 4; ++list) {
      if (table.pointer(t, list) == nullptr) {
        throw std::invalid_argument(std::string(op) + ": tensor " + std::to_string(t) + " has no " +
                                    names[list] + " pointer");
      }
    }
  }
  AdamConstants k;
  k.lr = o.lr;
  k.beta1 = o.beta1;
  k.beta2 = o.beta2;
  k.beta1_f = static_cast<float>(o.beta1);
  k.beta2_f = static_cast<float>(o.beta2);
  k.one_minus_beta1 = static_cast<float>(1.0 - o.beta1);
  k.one_minus_beta2 = static_cast<float>(1.0 - o.beta2);
  k.eps = static_cast<float>(o.eps);
  k.l2 = o.decoupled_weight_decay ? 0.0f : static_cast<float>(o.weight_decay);
  k.decay = o.decoupled_weight_decay ? static_cast<float>(1.0 - o.lr * o.weight_decay) : 1.0f;

  detail::launch_optimizer_step(table, grad_dtype, adam_kernel<float>, adam_kernel<__half>, k, step,
                                scaler, stream, "adam_kernel");
}

}  // namespace b3::cuda
