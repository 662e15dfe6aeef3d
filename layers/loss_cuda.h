// CUDA kernels of cross-entropy from logits (layers/loss.h, as
// torch.nn.functional.cross_entropy with reduction "mean") on raw device
// memory. logits [N, K] dense row-major, f32 or f16 (read into f32: the loss
// is computed in f32 either way, as autocast does); targets [N] class indices
// (i64 or i32); N >= 1, K >= 1.
//   forward:  row_logsumexp[n] = m + log(sum_c exp(z[n, c] - m)), m = max_c z[n, c]
//             loss[0] = (1/N) sum_n (row_logsumexp[n] - z[n, t_n])           (f32)
//   backward: grad_logits[n, c] = (exp(z[n, c] - row_logsumexp[n]) - [c == t_n])
//                                 * grad_loss[0] / N
// row_logsumexp ([N] f32) is written by the forward and read by the backward.
// grad_loss is a device pointer (one f32: the upstream gradient, e.g. the loss
// scale), so nothing here waits on the host. The sums run in a fixed order.
// A target outside [0, K) cannot throw from the device: it makes the loss NaN
// and that row's gradient NaN; check targets on the host where they come from.
// Defined in loss_cuda.cu.
#pragma once

#include <cstdint>

#include "tensor/cuda_stream.h"
#include "tensor/half.h"

namespace b3::cuda {

B3_CUDA_LAUNCHER(void cross_entropy_forward(const float* logits, const int64_t* targets,
                                            int64_t batch, int64_t classes, float* row_logsumexp,
                                            float* loss, const Stream& stream));
B3_CUDA_LAUNCHER(void cross_entropy_forward(const Half* logits, const int64_t* targets,
                                            int64_t batch, int64_t classes, float* row_logsumexp,
                                            float* loss, const Stream& stream));
B3_CUDA_LAUNCHER(void cross_entropy_forward(const float* logits, const int32_t* targets,
                                            int64_t batch, int64_t classes, float* row_logsumexp,
                                            float* loss, const Stream& stream));
B3_CUDA_LAUNCHER(void cross_entropy_forward(const Half* logits, const int32_t* targets,
                                            int64_t batch, int64_t classes, float* row_logsumexp,
                                            float* loss, const Stream& stream));

B3_CUDA_LAUNCHER(void cross_entropy_backward(const float* logits, const int64_t* targets,
                                             const float* row_logsumexp, const float* grad_loss,
                                             int64_t batch, int64_t classes, float* grad_logits,
                                             const Stream& stream));
B3_CUDA_LAUNCHER(void cross_entropy_backward(const Half* logits, const int64_t* targets,
                                             const float* row_logsumexp, const float* grad_loss,
                                             int64_t batch, int64_t classes, Half* grad_logits,
                                             const Stream& stream));
B3_CUDA_LAUNCHER(void cross_entropy_backward(const float* logits, const int32_t* targets,
                                             const float* row_logsumexp, const float* grad_loss,
                                             int64_t batch, int64_t classes, float* grad_logits,
                                             const Stream& stream));
B3_CUDA_LAUNCHER(void cross_entropy_backward(const Half* logits, const int32_t* targets,
                                             const float* row_logsumexp, const float* grad_loss,
                                             int64_t batch, int64_t classes, Half* grad_logits,
                                             const Stream& stream));

}  // namespace b3::cuda
