// The cuDNN columns of `b3 profile` (experiment/conv_algorithms.h), without a
// GPU: a report written in the format of cuda::conv_algorithm_report(), its
// keys built with Conv2dGeometry::str() (layers/conv2d.h) as the CUDA conv builds them, so
// a change of that format fails here instead of emptying the profile's
// columns; the lookup of a block's convolutions, Tensor Core counting, and
// the merged cells of experiment/profile_report.h.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "experiment/conv_algorithms.h"
#include "experiment/profile.h"
#include "experiment/profile_report.h"
#include "layers/conv2d_cuda.h"

using namespace b3;
using namespace b3::experiment;

namespace {

// One entry as conv_algorithm_report() prints it.
std::string report_entry(const Conv2dGeometry& g, const char* forward_math) {
  return "  " + g.str() + " (benchmark, workspace <= 1073741824 B)\n" +
         "    forward          IMPLICIT_PRECOMP_GEMM  " + forward_math +
         "  workspace         1024 B  0.1 ms\n" +
         "    backward data    ALGO_1                 TENSOR_OP   workspace            0 B  0.2 "
         "ms\n" +
         "    backward filter  ALGO_0                 DEFAULT     workspace            0 B  "
         "(heuristic)\n";
}

Conv2dGeometry geometry(int64_t batch, int64_t cin, int64_t hw, int64_t cout, int64_t k,
                        int64_t stride, int64_t padding, int64_t groups) {
  Conv2dGeometry g = conv2d_geometry(batch, cin, hw, hw, cout, k, stride, padding, groups);
  g.format = MemoryFormat::channels_last;
  g.dtype = DType::f16;
  return g;
}

Conv2dOptions options(int64_t cin, int64_t cout, int64_t k, int64_t stride, int64_t padding,
                      int64_t groups) {
  Conv2dOptions o;
  o.in_channels = cin;
  o.out_channels = cout;
  o.kernel_size = k;
  o.stride = stride;
  o.padding = padding;
  o.groups = groups;
  return o;
}

}  // namespace

TEST_CASE("conv algorithms: the report parses and a block's convolutions are found in it") {
  // A depthwise 3x3 stride 2 on [8, 16, 32, 32], then a squeeze-excitation 1x1 on [8, 16, 1, 1].
  const std::string text = "cuDNN convolution algorithms on cuda:0 (2 shapes)\n" +
                           report_entry(geometry(8, 16, 32, 16, 3, 2, 1, 16), "TENSOR_OP") +
                           report_entry(geometry(8, 16, 1, 8, 1, 1, 0, 1), "FMA");
  const ConvReport report = parse_conv_report(text);
  REQUIRE(report.size() == 2);
  const std::vector<ConvPassChoice>& first = report.begin()->second;
  REQUIRE(first.size() == 3);
  CHECK(first[0].pass == "forward");
  CHECK(first[1].pass == "backward data");
  CHECK(first[2].pass == "backward filter");
  CHECK(first[2].algorithm == "ALGO_0");
  CHECK(first[2].math == "DEFAULT");
  CHECK(uses_tensor_cores(first[1]));
  CHECK_FALSE(uses_tensor_cores(first[2]));

  const std::vector<ConvSite> convs = {{options(16, 16, 3, 2, 1, 16), false},
                                       {options(16, 8, 1, 1, 0, 1), true}};
  const BlockAlgorithms found = block_algorithms(convs, {8, 16, 32, 32}, report);
  CHECK(found.passes == 6);
  CHECK(found.tensor_core_passes == 3);  // depthwise forward + both backward data
  CHECK(found.algorithms ==
        "f16 NHWC: IMPLICIT_PRECOMP_GEMM/ALGO_1/ALGO_0 + f16 NHWC: IMPLICIT_PRECOMP_GEMM/ALGO_1/"
        "ALGO_0");

  // Another batch is another shape: not in the report.
  const BlockAlgorithms missing = block_algorithms(convs, {4, 16, 32, 32}, report);
  CHECK(missing.passes == 0);
  CHECK(missing.algorithms == "(not in the report) + (not in the report)");
  CHECK(block_algorithms(convs, {8, 16}, report).algorithms.empty());  // not 4-D
}

TEST_CASE("profile cells: merged when equal, per batch size otherwise; CPU kernel names") {
  CHECK(merged_cell({127, 128}, {"a", "a"}) == "a");
  CHECK(merged_cell({127, 128}, {"a", "b"}) == "@127: a; @128: b");
  CHECK(merged_cell({}, {}) == "-");
  CHECK(cpu_conv_kernel(options(16, 16, 3, 1, 1, 16)) == "depthwise");
  CHECK(cpu_conv_kernel(options(16, 32, 1, 1, 0, 1)) == "1x1 gemm");
  CHECK(cpu_conv_kernel(options(16, 32, 3, 1, 1, 1)) == "im2col gemm");
  CHECK(cpu_conv_kernel(options(3, 16, 3, 2, 1, 1)) == "narrow direct");  // the stem
}
