// The GEMM microbenchmark's Markdown table, CSV and plot (see gemm_report.h).
#include "experiment/gemm_report.h"

#include <algorithm>
#include <sstream>

namespace b3::experiment {

std::string gemm_shapes_text(const GemmConfig& config) {
  return config.vary == "mnk" ? "M = N = K"
                              : config.vary + " varied, the others " + std::to_string(config.fixed);
}

std::string gemm_markdown(const GemmPlan& plan, const std::vector<GemmRow>& rows,
                          const plot::PlotFiles& plot) {
  const GemmConfig& c = plan.config;
  std::ostringstream md;
  md << "# b3 gemm: " << plan.unit_name << " against matrix size\n\n"
     << "- device: " << plan.device_text << "; dtype: " << plan.dtype_text
     << "; layout: row-major A [M, K], B [N, K], C = A B^T (linear())\n"
     << "- shapes: " << gemm_shapes_text(c) << "; " << c.repeats
     << " timed repeats per shape, each >= " << c.min_seconds << " s of calls; mean ± sample std\n"
     << "- every result checked first against a double-precision reference (err/bound <= 1)\n\n"
     << "| M | N | K | " << plan.unit_name
     << " | us per call | err/bound |\n|---:|---:|---:|---:|---:|---:|\n";
  for (const GemmRow& r : rows) {
    md << "| " << r.m << " | " << r.n << " | " << r.k << " | "
       << report::format_mean_std(scaled_flops(r, plan), 2) << " | "
       << report::format("%.2f", r.seconds_per_call * 1e6) << " | "
       << report::format("%.3f", r.worst_error_ratio) << " |\n";
  }
  md << "\n" << (plot.rendered ? "![gemm](gemm.png)\n" : "Plot not rendered: " + plot.note + "\n");
  return md.str();
}

std::string gemm_csv(const std::vector<GemmRow>& rows) {
  std::ostringstream csv;
  csv << "m,n,k,flops_mean,flops_std,repeats,seconds_per_call,error_over_bound\n";
  for (const GemmRow& r : rows) {
    csv << r.m << "," << r.n << "," << r.k << "," << r.flops.mean << "," << r.flops.std << ","
        << r.flops.count << "," << r.seconds_per_call << "," << r.worst_error_ratio << "\n";
  }
  return csv.str();
}

plot::Figure gemm_figure(const GemmPlan& plan, const std::vector<GemmRow>& rows) {
  const GemmConfig& c = plan.config;
  plot::Series line{"all sizes", {}, {}, {}, true, "#bbbbbb", 0};
  plot::Series x64{"multiple of 64", {}, {}, {}, false, "#d62728", 7};
  plot::Series x8{"multiple of 8", {}, {}, {}, false, "#1f77b4", 5};
  plot::Series other{"other", {}, {}, {}, false, "#555555", 9};
  for (const GemmRow& r : rows) {
    const report::SampleSummary scaled = scaled_flops(r, plan);
    const double x = static_cast<double>(r.varied);
    line.x.push_back(x);
    line.y.push_back(scaled.mean);
    plot::Series& kind = r.varied % 64 == 0 ? x64 : r.varied % 8 == 0 ? x8 : other;
    kind.x.push_back(x);
    kind.y.push_back(scaled.mean);
    kind.error.push_back(scaled.std);
  }
  plot::Figure figure;
  figure.title = report::format("b3 gemm: %s vs size (%s) | %s, %s, row-major",
                                plan.unit_name.c_str(), gemm_shapes_text(c).c_str(),
                                plan.device_text.c_str(), plan.dtype_text.c_str());
  figure.subtitle = report::format("mean +- 1 sample std over %lld timed repeats per shape",
                                   static_cast<long long>(c.repeats));
  figure.x_label = c.vary == "mnk" ? "M = N = K" : c.vary;
  figure.y_label = plan.unit_name;
  figure.y_from_zero = true;
  figure.series.push_back(line);
  for (plot::Series* s : {&x64, &x8, &other})
    if (!s->y.empty()) figure.series.push_back(*s);
  if (plan.sizes.empty()) return figure;
  const int64_t smallest = *std::min_element(plan.sizes.begin(), plan.sizes.end());
  const int64_t largest = *std::max_element(plan.sizes.begin(), plan.sizes.end());
  figure.log_x = largest >= 3 * smallest;
  for (int64_t v = 64; v <= largest; v += 64)
    if (v >= smallest) figure.x_marks.push_back(static_cast<double>(v));
  return figure;
}

plot::PlotFiles write_gemm_report(const std::filesystem::path& dir, const GemmPlan& plan,
                                  const std::vector<GemmRow>& rows) {
  const plot::PlotFiles files = plot::write_plot(dir / "gemm", gemm_figure(plan, rows));
  report::write_text_atomically(dir / "gemm.csv", gemm_csv(rows));
  report::write_text_atomically(dir / "gemm.md", gemm_markdown(plan, rows, files));
  return files;
}

}  // namespace b3::experiment
