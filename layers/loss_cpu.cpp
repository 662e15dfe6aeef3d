// CPU loops of cross-entropy (see loss_cpu.h): per row a stable log-softmax,
// the exponentials summed in double; rows in parallel for large batches, the
// loss summed in row order (the same result for any thread count).
#include "layers/loss_cpu.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace b3::cpu {

template <typename T, typename Index>
void cross_entropy_forward(const T* logits, const Index* targets, int64_t batch, int64_t classes,
                           double* row_statistics, double* loss) {
  std::vector<double> row_loss(static_cast<size_t>(batch));
#pragma omp parallel for if (batch * classes > (1 << 15))
  for (int64_t n = 0; n < batch; ++n) {
    const T* row = logits + n * classes;
    const double row_max = static_cast<double>(*std::max_element(row, row + classes));
    double exp_sum = 0.0;
    for (int64_t c = 0; c < classes; ++c)
      exp_sum += std::exp(static_cast<double>(row[c]) - row_max);
    const double log_sum = std::log(exp_sum);  // logsumexp(z_n) = row_max + log_sum
    row_statistics[2 * n] = row_max;
    row_statistics[2 * n + 1] = log_sum;
    // logsumexp - z_t, written so that the large row_max cancels first.
    row_loss[static_cast<size_t>(n)] =
        log_sum - (static_cast<double>(row[static_cast<int64_t>(targets[n])]) - row_max);
  }
  double total = 0.0;
  for (double l : row_loss) total += l;
  *loss = total / static_cast<double>(batch);
}

template <typename T, typename Index>
void cross_entropy_backward(const T* logits, const Index* targets, const double* row_statistics,
                            double grad_loss, int64_t batch, int64_t classes, T* grad_logits) {
  const double scale = grad_loss / static_cast<double>(batch);
#pragma omp parallel for if (batch * classes > (1 << 15))
  for (int64_t n = 0; n < batch; ++n) {
    const double row_max = row_statistics[2 * n], log_sum = row_statistics[2 * n + 1];
    const int64_t target = static_cast<int64_t>(targets[n]);
    for (int64_t c = 0; c < classes; ++c) {
      const int64_t i = n * classes + c;
      const double probability = std::exp(static_cast<double>(logits[i]) - row_max - log_sum);
      const double onehot = c == target ? 1.0 : 0.0;
      grad_logits[i] = static_cast<T>((probability - onehot) * scale);
    }
  }
}

#define B3_CROSS_ENTROPY_CPU(T, Index)                                                             \
  template void cross_entropy_forward<T, Index>(const T*, const Index*, int64_t, int64_t, double*, \
                                                double*);                                          \
  template void cross_entropy_backward<T, Index>(const T*, const Index*, const double*, double,    \
                                                 int64_t, int64_t, T*);
B3_CROSS_ENTROPY_CPU(float, int64_t)
B3_CROSS_ENTROPY_CPU(float, int32_t)
B3_CROSS_ENTROPY_CPU(double, int64_t)
B3_CROSS_ENTROPY_CPU(double, int32_t)
#undef B3_CROSS_ENTROPY_CPU

}  // namespace b3::cpu
