// The layout experiment's tables and plot (experiment/layout.h): one row per
// variant with the step time and real images/s (mean and sample std over the
// repeats), the ratio to the baseline and whether the difference is beyond
// the run-to-run spread (experiment/report.h's rule); files layout.md,
// layout.csv and layout.png (with layout.dat and layout.gp).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "experiment/layout.h"
#include "experiment/plot.h"
#include "experiment/report.h"

namespace b3::experiment {

struct LayoutRow {
  LayoutVariant variant;
  std::string layout;  // "nhwc" or "nchw"
  int64_t batch = 0;   // images per step, padding included
  int64_t parameters = 0;
  report::SampleSummary step_ms, real_images_per_second;
  double relative = report::kNaN;  // mean images/s / the baseline's
  std::string verdict;             // against the baseline; "(baseline)" for it
};

// The first measurement is the baseline.
std::vector<LayoutRow> summarize_layout(const std::vector<LayoutMeasurement>& results);

std::string layout_markdown(const LayoutPlan& plan, const std::vector<LayoutRow>& rows,
                            const plot::PlotFiles& plot);
std::string layout_csv(const std::vector<LayoutRow>& rows);
plot::Figure layout_figure(const LayoutPlan& plan, const std::vector<LayoutRow>& rows);

// Writes layout.md, layout.csv and the plot into `dir` (which must exist).
plot::PlotFiles write_layout_report(const std::filesystem::path& dir, const LayoutPlan& plan,
                                    const std::vector<LayoutRow>& rows);

}  // namespace b3::experiment
