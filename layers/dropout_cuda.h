// The kernels of dropout on CUDA (layers/dropout.h):
//   draw_dropout_mask: the scaled mask {0, scale} drawn on the device from
//     Philox4x32-10 (tensor/philox.h) under `key`: element i keeps iff word
//     i % 4 of block i / 4 passes philox::keeps(word, threshold); no host
//     draw, no upload, nothing waits. With `key_slot` (not null) the kernel
//     reads the key from that device word instead, so that a CUDA graph
//     replay (tensor/cuda_graph.h) draws a fresh mask;
//   apply_dropout_mask: multiplies a tensor by its mask, both laid out
//     identically, for the forward (y = x * m) and the backward (dL/dx = g *
//     m). f16 values are multiplied in f32 and rounded once to nearest even;
//     f32 is one IEEE multiply, as on the CPU.
// n >= 0 (0 launches nothing); out may alias x element for element (in place).
// Declared for every build; defined in layers/dropout_cuda.cu (CUDA builds).
#pragma once

#include <cstdint>

#include "tensor/cuda_stream.h"
#include "tensor/half.h"

namespace b3::cuda {

// mask[i] = keeps(philox word i) ? scale : 0 for i < n (scale rounded to f16
// once for Half), in the dense logical order of the tensor it is drawn for.
B3_CUDA_LAUNCHER(void draw_dropout_mask(uint64_t key, const uint64_t* key_slot, uint32_t threshold,
                                        float scale, float* mask, int64_t n, const Stream& stream));
B3_CUDA_LAUNCHER(void draw_dropout_mask(uint64_t key, const uint64_t* key_slot, uint32_t threshold,
                                        float scale, Half* mask, int64_t n, const Stream& stream));

// out[i] = x[i] * mask[i]
B3_CUDA_LAUNCHER(void apply_dropout_mask(const float* x, const float* mask, float* out, int64_t n,
                                         const Stream& stream));
B3_CUDA_LAUNCHER(void apply_dropout_mask(const Half* x, const Half* mask, Half* out, int64_t n,
                                         const Stream& stream));

}  // namespace b3::cuda
