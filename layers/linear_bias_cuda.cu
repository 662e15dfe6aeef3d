// Linear's bias kernels (layers/linear_cuda.h): a [rows, cols] row-major
// matrix is a [1, cols, rows, 1] channels-last activation, so the broadcast
// and the column sums are the per-channel kernels of channel_reduce_cuda.cuh.
#include "layers/linear_cuda.h"

#include "layers/channel_reduce_cuda.cuh"

namespace b3::cuda {

namespace {

ActivationLayout as_channels(int64_t rows, int64_t cols, const char* op) {
  detail::check_nonnegative(rows, op, "rows");
  detail::check_nonnegative(cols, op, "cols");
  ActivationLayout layout;
  layout.batch = 1;
  layout.channels = cols;
  layout.height = rows;
  layout.width = 1;
  layout.format = MemoryFormat::channels_last;
  layout.check(op);
  return layout;
}

template <typename T>
void broadcast(const T* row, T* out, int64_t rows, int64_t cols, const Stream& stream) {
  const char* op = "cuda::broadcast_row";
  const ActivationLayout layout = as_channels(rows, cols, op);
  detail::check_pointer(row, layout.numel() > 0 ? cols : 0, op, "row");
  detail::check_pointer(out, layout.numel(), op, "out");
  detail::launch_channel_broadcast(detail::device_pointer<T>(nullptr), detail::device_pointer(row),
                                   detail::device_pointer(out), layout, 1.0f, stream);
}

template <typename T>
void column_sums(const T* in, T* out, int64_t rows, int64_t cols, const Stream& stream) {
  const char* op = "cuda::sum_rows";
  const ActivationLayout layout = as_channels(rows, cols, op);
  detail::check_pointer(in, layout.numel(), op, "in");
  detail::check_pointer(out, cols, op, "out");
  // rows == 0 gives zeros (an empty sum), as torch.sum does.
  detail::launch_channel_sum(detail::device_pointer(in), detail::device_pointer<T>(nullptr),
                             detail::device_pointer(out), layout, 1.0f, stream);
}

}  // namespace

void broadcast_row(const float* row, float* out, int64_t rows, int64_t cols, const Stream& stream) {
  broadcast(row, out, rows, cols, stream);
}
void broadcast_row(const Half* row, Half* out, int64_t rows, int64_t cols, const Stream& stream) {
  broadcast(row, out, rows, cols, stream);
}
void sum_rows(const float* in, float* out, int64_t rows, int64_t cols, const Stream& stream) {
  column_sums(in, out, rows, cols, stream);
}
void sum_rows(const Half* in, Half* out, int64_t rows, int64_t cols, const Stream& stream) {
  column_sums(in, out, rows, cols, stream);
}

}  // namespace b3::cuda
