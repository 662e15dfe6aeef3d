// The loss scaler's device kernels (optim/grad_scaler_cuda.h): a fused
// inf/nan check over every gradient, and the scale update, both reading and
// writing only device memory.
#include "optim/grad_scaler_cuda.h"

#include <stdexcept>
#include <string>

#include "optim/multi_tensor_cuda.cuh"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cuda_kernels.cuh"

namespace b3::cuda {

namespace {

static_assert(sizeof(LossScaleState) == 16, "LossScaleState is shared with device code");

__global__ void init_loss_scale_kernel(LossScaleState* state, float init_scale) {
  state->scale = init_scale;
  state->found_inf = 0;
  state->growth_tracker = 0;
  state->gradients_unscaled = 0;
}

// found_inf = 1 if any gradient * (1/scale) is not finite; with kInPlace the
// gradients are also replaced by that product (unscale_gradients) and
// gradients_unscaled is set.
template <typename G, bool kInPlace>
__global__ void gradient_pass_kernel(MultiTensorView view, int grad_list,
                                     LossScaleState* __restrict__ state) {
  const float inv_scale = 1.0f / state->scale;
  bool all_finite = true;
  detail::for_each_chunk(view, [&](int32_t tensor, int64_t start, int64_t count) {
    G* grad = detail::table_pointer<G>(view, tensor, grad_list) + start;
    for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
      const float unscaled = detail::to_float(grad[i]) * inv_scale;
      all_finite &= isfinite(unscaled);
      if constexpr (kInPlace) grad[i] = detail::from_float<G>(unscaled);
    }
  });
  // Any thread that saw inf/nan writes 1 (all write the same value); the
  // next kernel on the stream sees it.
  if (!all_finite) state->found_inf = 1;
  // Only this field is written besides found_inf; every block reads the scale.
  if (kInPlace && blockIdx.x == 0 && threadIdx.x == 0) state->gradients_unscaled = 1;
}

__global__ void update_loss_scale_kernel(LossScaleState* state, float growth_factor,
                                         float backoff_factor, int32_t growth_interval) {
  state->gradients_unscaled = 0;
  if (state->found_inf != 0) {
    state->scale *= backoff_factor;
    state->growth_tracker = 0;
    return;
  }
  const int32_t successful = state->growth_tracker + 1;
  if (successful == growth_interval) {
    const float grown = state->scale * growth_factor;
    if (isfinite(grown)) state->scale = grown;
    state->growth_tracker = 0;
  } else {
    state->growth_tracker = successful;
  }
}

void check_options(const LossScaleOptions& options, const char* op) {
  if (!(options.init_scale > 0.0f) || !(options.growth_factor > 1.0f) ||
      !(options.backoff_factor > 0.0f && options.backoff_factor < 1.0f) ||
      options.growth_interval < 1) {
    throw std::invalid_argument(
        std::string(op) +
        ": needs init_scale > 0, growth_factor > 1, 0 < backoff_factor < 1, growth_interval >= 1");
  }
}

}  // namespace

void init_loss_scale(LossScaleState* state, const LossScaleOptions& options, const Stream& stream) {
  check_options(options, "cuda::init_loss_scale");
  detail::check_pointer(state, 1, "cuda::init_loss_scale", "state");
  DeviceGuard guard(stream.device);
  init_loss_scale_kernel<<<1, 1, 0, stream.handle>>>(state, options.init_scale);
  B3_CUDA_CHECK_LAUNCH("init_loss_scale_kernel");
}

namespace {

// The checks both gradient passes make before touching the device.
void check_gradient_table(const MultiTensorTable& table, int grad_list, LossScaleState* state,
                          const Stream& stream, const char* op) {
  detail::check_pointer(state, 1, op, "state");
  if (grad_list < 0 || grad_list >= table.lists) {
    throw std::invalid_argument(std::string(op) + ": list " + std::to_string(grad_list) +
                                " of a table with " + std::to_string(table.lists));
  }
  if (table.device != stream.device) {
    throw std::invalid_argument(std::string(op) +
                                ": the table is on cuda:" + std::to_string(table.device) +
                                ", the stream on cuda:" + std::to_string(stream.device));
  }
  for (int64_t t = 0; t < table.tensors(); ++t) {
    if (table.numels[static_cast<size_t>(t)] > 0 && table.pointer(t, grad_list) == nullptr) {
      throw std::invalid_argument(std::string(op) + ": tensor " + std::to_string(t) +
                                  " has no gradient pointer");
    }
  }
}

// Clears found_inf, then runs `kernel` (the f32 or f16 instance) over the gradients.
void launch_gradient_pass(const MultiTensorTable& table, int grad_list, DType grad_dtype,
                          LossScaleState* state, const Stream& stream, const char* op,
                          void (*kernel_f32)(MultiTensorView, int, LossScaleState*),
                          void (*kernel_f16)(MultiTensorView, int, LossScaleState*),
                          const char* kernel_name) {
  check_gradient_table(table, grad_list, state, stream, op);
  if (grad_dtype != DType::f32 && grad_dtype != DType::f16) {
    throw std::invalid_argument(std::string(op) + ": gradients must be f32 or f16, not " +
                                dtype_name(grad_dtype));
  }
  DeviceGuard guard(stream.device);
  B3_CUDA_CHECK(cudaMemsetAsync(&state->found_inf, 0, sizeof(state->found_inf), stream.handle));
  if (table.view.chunks == 0) return;
  const unsigned int blocks = detail::multi_tensor_blocks(table.view);
  auto* kernel = grad_dtype == DType::f32 ? kernel_f32 : kernel_f16;
  kernel<<<blocks, detail::kMultiTensorThreads, 0, stream.handle>>>(table.view, grad_list, state);
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) {
    throw_cuda_error(status, (std::string("launch of ") + kernel_name).c_str(), __FILE__, __LINE__);
  }
}

}  // namespace

void check_gradients_finite(const MultiTensorTable& table, int grad_list, DType grad_dtype,
                            LossScaleState* state, const Stream& stream) {
  launch_gradient_pass(table, grad_list, grad_dtype, state, stream, "cuda::check_gradients_finite",
                       gradient_pass_kernel<float, false>, gradient_pass_kernel<__half, false>,
                       "gradient_pass_kernel (check)");
}

void unscale_gradients(const MultiTensorTable& table, int grad_list, DType grad_dtype,
                       LossScaleState* state, const Stream& stream) {
  launch_gradient_pass(table, grad_list, grad_dtype, state, stream, "cuda::unscale_gradients",
                       gradient_pass_kernel<float, true>, gradient_pass_kernel<__half, true>,
                       "gradient_pass_kernel (unscale)");
}

void update_loss_scale(LossScaleState* state, const LossScaleOptions& options,
                       const Stream& stream) {
  check_options(options, "cuda::update_loss_scale");
  detail::check_pointer(state, 1, "cuda::update_loss_scale", "state");
  DeviceGuard guard(stream.device);
  update_loss_scale_kernel<<<1, 1, 0, stream.handle>>>(
      state, options.growth_factor, options.backoff_factor, options.growth_interval);
  B3_CUDA_CHECK_LAUNCH("update_loss_scale_kernel");
}

}  // namespace b3::cuda
