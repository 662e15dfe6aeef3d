// CPU kernels of cross-entropy from logits (layers/loss.h, as
// torch.nn.functional.cross_entropy with reduction "mean"), shaped like the
// CUDA launchers of layers/loss_cuda.h. logits [N, K] dense row-major, f32 or
// f64; targets [N] class indices (i64 or i32), already checked to lie in
// [0, K); N >= 1, K >= 1. Everything is computed in double:
//   forward:  m = max_c z[n, c], s = log(sum_c exp(z[n, c] - m))
//             row_statistics[2n] = m, row_statistics[2n + 1] = s
//             loss = (1/N) sum_n (s - (z[n, t_n] - m))   (rows summed in order)
//   backward: grad_logits[n, c] = (exp(z[n, c] - m - s) - [c == t_n]) * grad_loss / N
// The backward recomputes the softmax from the logits and the row
// statistics exactly as the forward's formula does; keeping m and s apart
// (not their sum, the logsumexp) keeps exp(z - m - s) exact for logits of
// +-1000. Instantiated for float/double x i64/i32 in loss_cpu.cpp.
#pragma once

#include <cstdint>

namespace b3::cpu {

template <typename T, typename Index>
void cross_entropy_forward(const T* logits, const Index* targets, int64_t batch, int64_t classes,
                           double* row_statistics, double* loss);

template <typename T, typename Index>
void cross_entropy_backward(const T* logits, const Index* targets, const double* row_statistics,
                            double grad_loss, int64_t batch, int64_t classes, T* grad_logits);

}  // namespace b3::cpu
