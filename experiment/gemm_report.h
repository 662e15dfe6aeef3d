// The GEMM microbenchmark's table, CSV and plot (experiment/gemm.h): files
// gemm.md, gemm.csv and gemm.png (with gemm.dat and gemm.gp): FLOP/s
// against the varied size, the multiples of 64 and of 8 marked.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "experiment/gemm.h"
#include "experiment/plot.h"

namespace b3::experiment {

// "M = N = K", or "k varied, the others 512".
std::string gemm_shapes_text(const GemmConfig& config);

std::string gemm_markdown(const GemmPlan& plan, const std::vector<GemmRow>& rows,
                          const plot::PlotFiles& plot);
std::string gemm_csv(const std::vector<GemmRow>& rows);
plot::Figure gemm_figure(const GemmPlan& plan, const std::vector<GemmRow>& rows);

// Writes gemm.md, gemm.csv and the plot into `dir` (which must exist).
plot::PlotFiles write_gemm_report(const std::filesystem::path& dir, const GemmPlan& plan,
                                  const std::vector<GemmRow>& rows);

}  // namespace b3::experiment
