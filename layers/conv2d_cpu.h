// CPU kernels of conv2d on channels-last (NHWC) data, for float and double,
// told the call's Conv2dGeometry (layers/conv2d.h; its format must be
// channels_last) as the cuDNN calls of conv2d_cuda.h are.
// Declarations only: the kernels live in conv2d_cpu.cpp, the one file that
// includes Eigen, and are instantiated there for float and double.
//
// Layouts (all dense):
//   input       [N, H, W, Cin]         NHWC
//   output      [N, Ho, Wo, Cout]      NHWC
//   weight      [Cout, Cin/groups, k, k], as PyTorch stores it
//   bias        [Cout], or null
// Four algorithms, chosen from the shape (conv2d_cpu_algorithm), one file each:
//   pointwise (1x1, stride 1, padding 0): the input already is the im2col
//     matrix [N*H*W, Cin], so the convolution is one GEMM per group
//     (conv2d_cpu_gemm.cpp);
//   depthwise (groups == Cin == Cout): direct loops, innermost over channels,
//     register tiles for 3x3 and 5x5 (conv2d_cpu_depthwise.cpp);
//   narrow direct (at most 4 input channels and whole vectors of outputs,
//     the stem 3 -> 16): direct loops over output vectors; the input gradient
//     takes the GEMM path (conv2d_cpu_narrow.cpp);
//   everything else: im2col (rows N*Ho*Wo, columns (group, ky, kx, ci)) and
//     one GEMM per group, in chunks of the batch to bound the memory
//     (conv2d_cpu_gemm.cpp).
#pragma once

#include <cstdint>
#include <functional>

#include "layers/conv2d.h"
#include "layers/normalized_activation_cpu.h"

namespace b3::cpu {

enum class Conv2dCpuAlgorithm { pointwise_gemm, im2col_gemm, depthwise, narrow_direct };

// The algorithm the kernels below run for `geometry` (its dtype included:
// the narrow loops need whole vectors of output channels).
Conv2dCpuAlgorithm conv2d_cpu_algorithm(const Conv2dGeometry& geometry);
// "1x1 gemm", "im2col gemm", "depthwise" or "narrow direct".
const char* conv2d_cpu_algorithm_name(Conv2dCpuAlgorithm algorithm);

// output = epilogue(conv2d(input, weight) + bias), the epilogue per output
// channel (layers/normalized_activation_cpu.h). The depthwise and narrow
// loops and the f32 one-group GEMMs apply it to each vector as they store
// it; the others (f64 and grouped GEMMs) in a pass over the output after.
template <typename T>
void conv2d_forward(const Conv2dGeometry& shape, const T* input, const T* weight, const T* bias,
                    T* output, const OutputEpilogue<T>& epilogue = {});

// Writes images [first, first + count) of an NHWC input into `out` (T
// elements, dense); thread-safe and serial. For a backward whose input was
// not kept (autograd/node.h's Node::OutputReplay).
using InputReplay = std::function<void(int64_t first, int64_t count, void* out)>;

// From dL/d(output), writes (overwrites) whichever of dL/d(input) (NHWC),
// dL/d(weight) ([Cout, Cin/groups, k, k]) and dL/d(bias) is not null.
// `input` is read only for grad_weight and `weight` only for grad_input; the
// other may be null. The depthwise algorithm also takes a null `input` with
// `input_replay`: each thread rebuilds the images it reads into a buffer of
// one image (in cache), the same weight gradient as from the input itself.
//
// `grad_output` may also be null with `grad_output_rows`, which writes rows
// [first, first + count) of dL/d(output) (pixels of Cout values, dense):
// a 1x1 convolution needing both gradients forms G slice by slice in cache
// (gemm_cpu.h's conv1x1_backward); other shapes form it whole first.
template <typename T>
void conv2d_backward(const Conv2dGeometry& shape, const T* input, const T* weight,
                     const T* grad_output, T* grad_input, T* grad_weight, T* grad_bias,
                     const InputReplay& input_replay = {},
                     const InputReplay& grad_output_rows = {});

extern template void conv2d_forward<float>(const Conv2dGeometry&, const float*, const float*,
                                           const float*, float*, const OutputEpilogue<float>&);
extern template void conv2d_forward<double>(const Conv2dGeometry&, const double*, const double*,
                                            const double*, double*, const OutputEpilogue<double>&);
extern template void conv2d_backward<float>(const Conv2dGeometry&, const float*, const float*,
                                            const float*, float*, float*, float*,
                                            const InputReplay&, const InputReplay&);
extern template void conv2d_backward<double>(const Conv2dGeometry&, const double*, const double*,
                                             const double*, double*, double*, double*,
                                             const InputReplay&, const InputReplay&);

}  // namespace b3::cpu
