// The GEMM microbenchmark as a library (experiment/gemm.h,
// experiment/gemm_report.h): the reference check accepts linear()'s result
// and rejects a wrong one, a tiny measurement, and the table and CSV.
#include <doctest/doctest.h>

#include <sstream>
#include <stdexcept>
#include <string>

#include "autograd/grad_mode.h"
#include "experiment/gemm.h"
#include "experiment/gemm_report.h"
#include "layers/linear.h"
#include "tensor/random.h"

using namespace b3;
using namespace b3::experiment;

TEST_CASE("gemm reference check: linear() is within its bound, a wrong element is not") {
  NoGradGuard no_grad;
  Generator gen(3);
  Tensor a = empty({5, 7}, TensorOptions(DType::f32));
  Tensor b = empty({4, 7}, TensorOptions(DType::f32));
  uniform_(a, -1.0, 1.0, gen);
  uniform_(b, -1.0, 1.0, gen);
  const Tensor c = linear(a, b);
  const double ratio = check_against_reference(a, b, c, DType::f32);
  CHECK(ratio >= 0.0);
  CHECK(ratio <= 1.0);
  Tensor wrong = c.clone();
  wrong.data<float>()[6] += 1e-3f;
  CHECK_THROWS_WITH_AS(check_against_reference(a, b, wrong, DType::f32),
                       doctest::Contains("gemm: the result for M=5 N=4 K=7 is wrong"),
                       std::runtime_error);
}

TEST_CASE("gemm: a tiny run on the CPU, its rows, table and CSV") {
  GemmConfig config;
  config.sizes = "8,9";
  config.vary = "k";
  config.fixed = 4;
  config.repeats = 2;
  config.min_seconds = 1e-4;
  const GemmPlan plan = plan_gemm(config);
  CHECK(plan.dtype == DType::f32);
  CHECK(plan.unit_name == "GFLOP/s");
  int seen = 0;
  const std::vector<GemmRow> rows = run_gemm(plan, [&](const GemmRow&) { ++seen; });
  REQUIRE(rows.size() == 2);
  CHECK(seen == 2);
  CHECK(rows[1].m == 4);
  CHECK(rows[1].n == 4);
  CHECK(rows[1].k == 9);
  CHECK(rows[1].varied == 9);
  CHECK(rows[1].flops.count == 2);
  CHECK(rows[1].flops.mean > 0);
  CHECK(rows[1].worst_error_ratio <= 1.0);
  CHECK(alignment_label(64) == "x64");
  CHECK(alignment_label(24) == "x8");
  CHECK(alignment_label(9) == "-");
  CHECK(gemm_shapes_text(config) == "k varied, the others 4");

  std::istringstream csv(gemm_csv(rows));
  std::string header, first;
  std::getline(csv, header);
  std::getline(csv, first);
  CHECK(header == "m,n,k,flops_mean,flops_std,repeats,seconds_per_call,error_over_bound");
  CHECK(first.rfind("4,4,8,", 0) == 0);
  const std::string md = gemm_markdown(plan, rows, plot::PlotFiles{});
  CHECK(md.find("| M | N | K | GFLOP/s | us per call | err/bound |") != std::string::npos);
  CHECK(md.find("| 4 | 4 | 9 | ") != std::string::npos);
  CHECK(md.find("- shapes: k varied, the others 4; 2 timed repeats") != std::string::npos);

  GemmConfig bad;
  bad.sizes = std::string(1, '0');  // (not = "0": GCC 12 misreports that at -O3, -Wrestrict)
  CHECK_THROWS_WITH_AS(plan_gemm(bad), doctest::Contains("--sizes: sizes must be positive"),
                       std::invalid_argument);
}
