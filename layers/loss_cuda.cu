// Cross-entropy on CUDA: one warp per row finds the row's max and
// log-sum-exp; a single block then averages the per-row losses in a fixed
// order (deterministic, no atomics); the backward is one warp per row again.
#include "layers/loss_cuda.h"

#include <cmath>
#include <limits>

#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cuda_kernels.cuh"

namespace b3::cuda {

namespace {

using detail::device_pointer;
using detail::from_float;
using detail::kWarpSize;
using detail::to_float;

constexpr int kRowsPerBlock = detail::kThreadsPerBlock / kWarpSize;
constexpr int kMeanThreads = 1024;

template <typename T>
__global__ void row_logsumexp_kernel(const T* __restrict__ logits, int64_t batch, int64_t classes,
                                     float* __restrict__ row_logsumexp) {
  const int lane = threadIdx.x % kWarpSize;
  for (int64_t row = blockIdx.x * int64_t{kRowsPerBlock} + threadIdx.x / kWarpSize; row < batch;
       row += int64_t{gridDim.x} * kRowsPerBlock) {
    const T* z = logits + row * classes;
    float m = -INFINITY;
    for (int64_t c = lane; c < classes; c += kWarpSize) m = fmaxf(m, to_float(z[c]));
    m = detail::warp_max(m);
    float sum = 0.0f;
    for (int64_t c = lane; c < classes; c += kWarpSize) sum += expf(to_float(z[c]) - m);
    sum = detail::warp_sum(sum);
    // A NaN logit is skipped by fmaxf but poisons the sum, so the row is NaN as it should be.
    if (lane == 0) row_logsumexp[row] = m + logf(sum);
  }
}

template <typename T, typename Target>
__global__ void mean_loss_kernel(const T* __restrict__ logits, const Target* __restrict__ targets,
                                 const float* __restrict__ row_logsumexp, int64_t batch,
                                 int64_t classes, float* __restrict__ loss) {
  __shared__ float scratch[kWarpSize];
  float sum = 0.0f;
  for (int64_t row = threadIdx.x; row < batch; row += blockDim.x) {
    const int64_t t = static_cast<int64_t>(targets[row]);
    sum += (t >= 0 && t < classes) ? row_logsumexp[row] - to_float(logits[row * classes + t]) : NAN;
  }
  const float total = detail::block_sum(sum, scratch);
  if (threadIdx.x == 0) *loss = total / static_cast<float>(batch);
}

template <typename T, typename Target>
__global__ void cross_entropy_backward_kernel(const T* __restrict__ logits,
                                              const Target* __restrict__ targets,
                                              const float* __restrict__ row_logsumexp,
                                              const float* __restrict__ grad_loss, int64_t batch,
                                              int64_t classes, T* __restrict__ grad_logits) {
  const int lane = threadIdx.x % kWarpSize;
  const float scale = *grad_loss / static_cast<float>(batch);
  for (int64_t row = blockIdx.x * int64_t{kRowsPerBlock} + threadIdx.x / kWarpSize; row < batch;
       row += int64_t{gridDim.x} * kRowsPerBlock) {
    const int64_t t = static_cast<int64_t>(targets[row]);
    const bool valid = t >= 0 && t < classes;
    const float lse = row_logsumexp[row];
    const T* z = logits + row * classes;
    T* g = grad_logits + row * classes;
    for (int64_t c = lane; c < classes; c += kWarpSize) {
      const float p = expf(to_float(z[c]) - lse);
      const float value = valid ? (p - (c == t ? 1.0f : 0.0f)) * scale : NAN;
      g[c] = from_float<T>(value);
    }
  }
}

void check_sizes(const char* op, int64_t batch, int64_t classes) {
  detail::check_nonnegative(batch, op, "batch");
  detail::check_nonnegative(classes, op, "classes");
  if (batch == 0) {
    throw std::invalid_argument(std::string(op) + ": the mean over an empty batch is undefined");
  }
  if (classes == 0) throw std::invalid_argument(std::string(op) + ": logits have 0 classes");
  if (batch > std::numeric_limits<int64_t>::max() / classes) {
    throw std::invalid_argument(std::string(op) + ": [" + std::to_string(batch) + ", " +
                                std::to_string(classes) + "] has too many elements");
  }
}

template <typename T, typename Target>
void forward(const T* logits, const Target* targets, int64_t batch, int64_t classes,
             float* row_logsumexp, float* loss, const Stream& stream) {
  const char* op = "cuda::cross_entropy_forward";
  check_sizes(op, batch, classes);
  detail::check_pointer(logits, batch * classes, op, "logits");
  detail::check_pointer(targets, batch, op, "targets");
  detail::check_pointer(row_logsumexp, batch, op, "row_logsumexp");
  detail::check_pointer(loss, 1, op, "loss");
  DeviceGuard guard(stream.device);
  row_logsumexp_kernel<<<detail::blocks_for(batch, kRowsPerBlock), detail::kThreadsPerBlock, 0,
                         stream.handle>>>(device_pointer(logits), batch, classes, row_logsumexp);
  B3_CUDA_CHECK_LAUNCH("row_logsumexp_kernel");
  mean_loss_kernel<<<1, kMeanThreads, 0, stream.handle>>>(device_pointer(logits), targets,
                                                          row_logsumexp, batch, classes, loss);
  B3_CUDA_CHECK_LAUNCH("mean_loss_kernel");
}

template <typename T, typename Target>
void backward(const T* logits, const Target* targets, const float* row_logsumexp,
              const float* grad_loss, int64_t batch, int64_t classes, T* grad_logits,
              const Stream& stream) {
  const char* op = "cuda::cross_entropy_backward";
  check_sizes(op, batch, classes);
  detail::check_pointer(logits, batch * classes, op, "logits");
  detail::check_pointer(targets, batch, op, "targets");
  detail::check_pointer(row_logsumexp, batch, op, "row_logsumexp");
  detail::check_pointer(grad_loss, 1, op, "grad_loss");
  detail::check_pointer(grad_logits, batch * classes, op, "grad_logits");
  DeviceGuard guard(stream.device);
  cross_entropy_backward_kernel<<<detail::blocks_for(batch, kRowsPerBlock),
                                  detail::kThreadsPerBlock, 0, stream.handle>>>(
      device_pointer(logits), targets, row_logsumexp, grad_loss, batch, classes,
      device_pointer(grad_logits));
  B3_CUDA_CHECK_LAUNCH("cross_entropy_backward_kernel");
}

}  // namespace

void cross_entropy_forward(const float* logits, const int64_t* targets, int64_t batch,
                           int64_t classes, float* row_logsumexp, float* loss,
                           const Stream& stream) {
  forward(logits, targets, batch, classes, row_logsumexp, loss, stream);
}
void cross_entropy_forward(const Half* logits, const int64_t* targets, int64_t batch,
                           int64_t classes, float* row_logsumexp, float* loss,
                           const Stream& stream) {
  forward(logits, targets, batch, classes, row_logsumexp, loss, stream);
}
void cross_entropy_forward(const float* logits, const int32_t* targets, int64_t batch,
                           int64_t classes, float* row_logsumexp, float* loss,
                           const Stream& stream) {
  forward(logits, targets, batch, classes, row_logsumexp, loss, stream);
}
void cross_entropy_forward(const Half* logits, const int32_t* targets, int64_t batch,
                           int64_t classes, float* row_logsumexp, float* loss,
                           const Stream& stream) {
  forward(logits, targets, batch, classes, row_logsumexp, loss, stream);
}

void cross_entropy_backward(const float* logits, const int64_t* targets, const float* row_logsumexp,
                            const float* grad_loss, int64_t batch, int64_t classes,
                            float* grad_logits, const Stream& stream) {
  backward(logits, targets, row_logsumexp, grad_loss, batch, classes, grad_logits, stream);
}
void cross_entropy_backward(const Half* logits, const int64_t* targets, const float* row_logsumexp,
                            const float* grad_loss, int64_t batch, int64_t classes,
                            Half* grad_logits, const Stream& stream) {
  backward(logits, targets, row_logsumexp, grad_loss, batch, classes, grad_logits, stream);
}
void cross_entropy_backward(const float* logits, const int32_t* targets, const float* row_logsumexp,
                            const float* grad_loss, int64_t batch, int64_t classes,
                            float* grad_logits, const Stream& stream) {
  backward(logits, targets, row_logsumexp, grad_loss, batch, classes, grad_logits, stream);
}
void cross_entropy_backward(const Half* logits, const int32_t* targets, const float* row_logsumexp,
                            const float* grad_loss, int64_t batch, int64_t classes,
                            Half* grad_logits, const Stream& stream) {
  backward(logits, targets, row_logsumexp, grad_loss, batch, classes, grad_logits, stream);
}

}  // namespace b3::cuda
