// The cuDNN algorithm columns of `b3 profile`: which forward / backward-data /
// backward-filter algorithm each convolution of a block chose, and how many
// of those passes run with Tensor Core math, read from the CUDA conv's
// algorithm cache report (cuda::conv_algorithm_report(), layers/conv2d_cuda.h).
// Each convolution is found in the report by the geometry text its cache key
// is built from (Conv2dGeometry::str(): batch, channels, spatial size,
// kernel, stride, padding, groups), so this file mirrors that format.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "layers/conv2d.h"
#include "tensor/tensor.h"

namespace b3::experiment {

// A convolution inside a block, as the report lookup needs it: its options,
// and whether it sits in a squeeze-excitation (its input is then [N, C, 1, 1]).
struct ConvSite {
  Conv2dOptions options;
  bool squeeze_excite = false;
};

// One pass of one convolution shape in cuda::conv_algorithm_report().
struct ConvPassChoice {
  std::string pass;       // "forward", "backward data", "backward filter"
  std::string algorithm;  // cuDNN's name without its prefix, e.g. IMPLICIT_PRECOMP_GEMM
  std::string math;       // DEFAULT, TENSOR_OP, TENSOR_OP_ALLOW_CONVERSION, FMA
};
using ConvReport = std::map<std::string, std::vector<ConvPassChoice>>;  // by cache key

// Parses the report's blocks: a key line indented by two spaces
// ("  f16 NHWC x[...] w[...] stride 1 pad 1 groups 16 (benchmark, ...)"),
// then one line per pass indented by four ("    forward  ALGO  MATH  workspace ...").
ConvReport parse_conv_report(const std::string& text);

// Whether a pass's math is TENSOR_OP (or TENSOR_OP_ALLOW_CONVERSION).
bool uses_tensor_cores(const ConvPassChoice& c);

// What one block's convolutions chose at one batch size.
struct BlockAlgorithms {
  std::string algorithms;  // per convolution "forward/backward data/backward filter", " + "
  int tensor_core_passes = 0;
  int passes = 0;
};

// The convolutions of a block whose input is `input` ([N, C, H, W]), looked
// up in the report by the geometry text the CUDA conv builds its key from
// (Conv2dGeometry::str(), without the dtype and layout in front).
BlockAlgorithms block_algorithms(const std::vector<ConvSite>& convs, const Shape& input,
                                 const ConvReport& conv_report);

}  // namespace b3::experiment
