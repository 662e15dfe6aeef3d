// The layout experiment's statistics, table, CSV and bar chart (see
// layout_report.h).
#include "experiment/layout_report.h"

#include <sstream>

namespace b3::experiment {

namespace {

void write_header(std::ostringstream& md, const LayoutPlan& plan) {
  const LayoutConfig& c = plan.config;
  const bool cuda = plan.device.is_cuda();
  md << "# b3 layout: one training step under different memory layouts\n\n"
     << "- device: " << plan.device_text << "; dtype: " << report::precision_name(plan.amp)
     << "; model: " << c.model << "; batch " << c.batch_size
     << " (padded variant: " << plan.padded_batch << ")\n";
  if (cuda) {
    md << "- precision: " << report::precision_description(plan.amp)
       << "\n- step: train_step() (forward, cross-entropy, backward"
       << (plan.amp ? " (loss-scaled), GradScaler step" : "")
       << ", Adam's fused CUDA update; model on the GPU, weights in the variant's layout) on "
          "synthetic ";
  } else {
    md << "- step: train_step() (forward, cross-entropy, backward, Adam) on synthetic ";
  }
  md << c.image_size << "x" << c.image_size << " images; " << c.warmup << " warm-up + " << c.steps
     << " timed steps per measurement; " << c.repeats
     << " measurements per variant, interleaved; mean ± sample std\n"
     << "- misaligned: input batch and parameters start " << c.misalign_bytes << " bytes past a "
     << plan.alignment << "-byte boundary"
     << (cuda && plan.amp ? " (the f32 master weights; autocast's f16 copies are aligned)" : "")
     << "\n"
     << "- images/s counts real images only (" << c.batch_size << " per step)\n\n";
}

}  // namespace

std::vector<LayoutRow> summarize_layout(const std::vector<LayoutMeasurement>& results) {
  std::vector<LayoutRow> rows;
  if (results.empty()) return rows;
  const report::SampleSummary baseline = report::summarize(results.front().real_images_per_second);
  for (const LayoutMeasurement& r : results) {
    LayoutRow row;
    row.variant = r.variant;
    row.layout = r.variant.format == MemoryFormat::channels_last ? "nhwc" : "nchw";
    row.batch = r.batch;
    row.parameters = r.parameters;
    std::vector<double> ms;
    for (double s : r.step_seconds) ms.push_back(1e3 * s);
    row.step_ms = report::summarize(ms);
    row.real_images_per_second = report::summarize(r.real_images_per_second);
    row.relative = row.real_images_per_second.mean / baseline.mean;
    row.verdict = &r == &results.front()
                      ? "(baseline)"
                      : report::compare(row.real_images_per_second, baseline).verdict;
    rows.push_back(row);
  }
  return rows;
}

std::string layout_markdown(const LayoutPlan& plan, const std::vector<LayoutRow>& rows,
                            const plot::PlotFiles& plot) {
  std::ostringstream md;
  write_header(md, plan);
  md << "| variant | layout | channel divisor | images per step | storage | parameters | step "
        "(ms) | real images/s | relative to baseline | beyond spread vs baseline |\n"
     << "|---|---|---:|---:|---|---:|---:|---:|---:|---|\n";
  for (const LayoutRow& r : rows) {
    md << "| " << r.variant.name << " | " << r.layout << " | " << r.variant.channel_divisor << " | "
       << r.batch << " | " << (r.variant.misaligned ? "misaligned" : "aligned") << " | "
       << r.parameters << " | " << report::format_mean_std(r.step_ms, 2) << " | "
       << report::format_mean_std(r.real_images_per_second, 1) << " | "
       << report::format("%.3f", r.relative) << " | " << r.verdict << " |\n";
  }
  md << "\n" << report::kSignificanceRule << "\n\n";
  md << (plot.rendered ? "![layout](layout.png)\n" : "Plot not rendered: " + plot.note + "\n");
  return md.str();
}

std::string layout_csv(const std::vector<LayoutRow>& rows) {
  std::ostringstream csv;
  csv << "variant,layout,channel_divisor,images_per_step,misaligned,parameters,step_ms_mean,"
         "step_ms_std,real_images_per_second_mean,real_images_per_second_std,repeats\n";
  for (const LayoutRow& r : rows) {
    csv << '"' << r.variant.name << "\"," << r.layout << "," << r.variant.channel_divisor << ","
        << r.batch << "," << (r.variant.misaligned ? 1 : 0) << "," << r.parameters << ","
        << r.step_ms.mean << "," << r.step_ms.std << "," << r.real_images_per_second.mean << ","
        << r.real_images_per_second.std << "," << r.real_images_per_second.count << "\n";
  }
  return csv.str();
}

plot::Figure layout_figure(const LayoutPlan& plan, const std::vector<LayoutRow>& rows) {
  const LayoutConfig& c = plan.config;
  plot::Series bars{"real images/s (mean +- 1 std)", {}, {}, {}, false, "#4477aa", 7};
  plot::Figure figure;
  figure.bars = true;
  for (const LayoutRow& r : rows) {
    bars.y.push_back(r.real_images_per_second.mean);
    bars.error.push_back(r.real_images_per_second.std);
    figure.bar_labels.push_back(r.variant.name);
  }
  figure.series.push_back(bars);
  figure.title = report::format("b3 layout: %s training step, batch %lld | %s, %s", c.model.c_str(),
                                static_cast<long long>(c.batch_size), plan.device_text.c_str(),
                                report::precision_name(plan.amp).c_str());
  figure.subtitle = report::format(
      "real images/s, mean +- 1 sample std over %lld measurements of %lld steps; baseline nhwc, "
      "divisor 8, unpadded, aligned; %lldx%lld synthetic",
      static_cast<long long>(c.repeats), static_cast<long long>(c.steps),
      static_cast<long long>(c.image_size), static_cast<long long>(c.image_size));
  figure.y_label = "real images/s";
  figure.y_from_zero = true;
  return figure;
}

plot::PlotFiles write_layout_report(const std::filesystem::path& dir, const LayoutPlan& plan,
                                    const std::vector<LayoutRow>& rows) {
  const plot::PlotFiles files = plot::write_plot(dir / "layout", layout_figure(plan, rows));
  report::write_text_atomically(dir / "layout.md", layout_markdown(plan, rows, files));
  report::write_text_atomically(dir / "layout.csv", layout_csv(rows));
  return files;
}

}  // namespace b3::experiment
