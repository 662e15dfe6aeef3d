// The per-layer profile's Markdown table, CSV and plot (see
// profile_report.h).
#include "experiment/profile_report.h"

#include <sstream>

#include "experiment/report.h"

namespace b3::experiment {

namespace {

// Median forward and backward ms of block `i` at every batch size.
struct BlockMedians {
  std::vector<double> forward_ms, backward_ms;
};

BlockMedians medians_of(const ProfileResult& result, size_t i) {
  BlockMedians m;
  for (const BatchProfile& p : result.profiles) {
    m.forward_ms.push_back(1e3 * report::median(p.blocks[i].forward));
    m.backward_ms.push_back(1e3 * report::median(p.blocks[i].backward));
  }
  return m;
}

void write_header(std::ostringstream& md, const ProfilePlan& plan) {
  const ProfileConfig& c = plan.config;
  md << "# b3 profile: per-layer time at batch sizes " << c.batch_sizes << "\n\n"
     << "- device: " << plan.device_text << "; dtype: " << report::precision_name(plan.amp)
     << "; layout: " << c.format << "; model " << c.model << "; " << c.image_size << "x"
     << c.image_size << " synthetic images\n"
     << "- median over " << c.repeats << " profiled steps (after " << c.warmup
     << " warm-up) per batch size; forward and backward of each top-level block timed alone\n"
     << "- per image: the time divided by the batch size; the last column compares the last "
        "batch size with the first (below 1: cheaper per image)\n";
  if (plan.device.is_cuda()) {
    md << "- precision: " << report::precision_description(plan.amp) << "; model on the GPU"
       << (c.format == "nhwc" ? " with channels_last weights" : "")
       << "\n- each piece timed on the host clock between two synchronizations of the compute "
          "stream (its kernel launch overhead included)\n"
       << "- cuDNN algorithm: per convolution of the block, forward / backward data / backward "
          "filter, from the algorithm cache (cudnnFind, as cudnn.benchmark); Tensor Cores: the "
          "passes whose chosen math is TENSOR_OP, of all passes\n";
  }
  md << "\n";
}

void write_table_head(std::ostringstream& md, const std::vector<int64_t>& batch_sizes) {
  md << "| layer | module | output (batch " << batch_sizes.front() << ") |";
  for (int64_t b : batch_sizes) md << " fwd ms @" << b << " |";
  for (int64_t b : batch_sizes) md << " bwd ms @" << b << " |";
  md << " per-image time " << batch_sizes.back() << " / " << batch_sizes.front()
     << " | CPU conv kernels | cuDNN algorithm | Tensor Cores |\n|---|---|---|";
  for (size_t i = 0; i < 2 * batch_sizes.size(); ++i) md << "---:|";
  md << "---:|---|---|---|\n";
}

// The cuDNN columns of block `i`: its algorithms and Tensor Core passes.
std::string gpu_cells(const ProfilePlan& plan, const ProfileResult& result, size_t i) {
  std::vector<std::string> algorithm_cells, tensor_core_cells;
  for (size_t p = 0; p < result.profiles.size(); ++p) {
    const int64_t size = plan.config.image_size;
    const Shape input = i == 0 ? Shape{result.profiles[p].batch, 3, size, size}
                               : result.profiles[p].blocks[i - 1].output_shape;
    const BlockAlgorithms a = block_algorithms(result.blocks[i].convs, input, result.conv_report);
    algorithm_cells.push_back(a.algorithms.empty() ? "-" : a.algorithms);
    tensor_core_cells.push_back(
        a.passes == 0 ? "-" : report::format("%d of %d passes", a.tensor_core_passes, a.passes));
  }
  return " n/a (GPU) | " + merged_cell(plan.batch_sizes, algorithm_cells) + " | " +
         merged_cell(plan.batch_sizes, tensor_core_cells) + " |\n";
}

void write_block_row(std::ostringstream& md, const ProfilePlan& plan, const ProfileResult& result,
                     size_t i) {
  const Block& block = result.blocks[i];
  md << "| " << block.name << " | " << block.description << " | "
     << shape_str(result.profiles.front().blocks[i].output_shape) << " |";
  const BlockMedians m = medians_of(result, i);
  for (double v : m.forward_ms) md << report::format(" %.3f |", v);
  for (double v : m.backward_ms) md << report::format(" %.3f |", v);
  const double first = (m.forward_ms.front() + m.backward_ms.front()) /
                       static_cast<double>(plan.batch_sizes.front());
  const double last =
      (m.forward_ms.back() + m.backward_ms.back()) / static_cast<double>(plan.batch_sizes.back());
  md << report::format(" %.3f |", last / first);
  if (plan.device.is_cuda()) {
    md << gpu_cells(plan, result, i);
  } else {
    md << " " << block.cpu_kernels << " | n/a (CPU) | n/a (CPU) |\n";
  }
}

void write_sums(std::ostringstream& md, const ProfilePlan& plan, const ProfileResult& result) {
  std::vector<double> forward_total(result.profiles.size(), 0.0);
  std::vector<double> backward_total(result.profiles.size(), 0.0);
  for (size_t i = 0; i < result.blocks.size(); ++i) {
    const BlockMedians m = medians_of(result, i);
    for (size_t p = 0; p < result.profiles.size(); ++p) {
      forward_total[p] += m.forward_ms[p];
      backward_total[p] += m.backward_ms[p];
    }
  }
  md << "| **sum** | | |";
  for (double v : forward_total) md << report::format(" **%.2f** |", v);
  for (double v : backward_total) md << report::format(" **%.2f** |", v);
  const auto first = static_cast<double>(plan.batch_sizes.front());
  const auto last = static_cast<double>(plan.batch_sizes.back());
  md << report::format(" %.3f | | | |\n",
                       (forward_total.back() + backward_total.back()) / last /
                           ((forward_total.front() + backward_total.front()) / first));
  md << "\nUncut training step, train_step() with its Adam update (median ms):";
  for (const BatchProfile& p : result.profiles)
    md << report::format(" batch %lld: %.2f;", static_cast<long long>(p.batch),
                         1e3 * report::median(p.whole_step));
  md << " (the sum of the parts above should be close; the update is not among them).\n";
}

}  // namespace

std::string merged_cell(const std::vector<int64_t>& batch_sizes,
                        const std::vector<std::string>& cells) {
  bool same = true;
  for (const std::string& c : cells) same = same && c == cells.front();
  if (same) return cells.empty() ? "-" : cells.front();
  std::string text;
  for (size_t p = 0; p < cells.size(); ++p)
    text += (text.empty() ? "@" : "; @") + std::to_string(batch_sizes[p]) + ": " + cells[p];
  return text;
}

std::string profile_markdown(const ProfilePlan& plan, const ProfileResult& result,
                             const plot::PlotFiles& plot) {
  std::ostringstream md;
  write_header(md, plan);
  write_table_head(md, plan.batch_sizes);
  for (size_t i = 0; i < result.blocks.size(); ++i) write_block_row(md, plan, result, i);
  write_sums(md, plan, result);
  if (plan.device.is_cuda()) md << "\n```\n" << result.algorithm_report << "```\n";
  md << "\n"
     << (plot.rendered ? "![profile](profile.png)\n" : "Plot not rendered: " + plot.note + "\n");
  return md.str();
}

std::string profile_csv(const ProfilePlan& plan, const ProfileResult& result) {
  std::ostringstream csv;
  csv << "layer,batch_size,forward_ms,backward_ms,repeats\n";
  for (size_t i = 0; i < result.blocks.size(); ++i) {
    const BlockMedians m = medians_of(result, i);
    for (size_t p = 0; p < result.profiles.size(); ++p) {
      csv << result.blocks[i].name << "," << result.profiles[p].batch << "," << m.forward_ms[p]
          << "," << m.backward_ms[p] << "," << plan.config.repeats << "\n";
    }
  }
  return csv.str();
}

plot::Figure profile_figure(const ProfilePlan& plan, const ProfileResult& result) {
  const ProfileConfig& c = plan.config;
  plot::Figure figure;
  for (size_t p = 0; p < result.profiles.size(); ++p) {
    static const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"};
    plot::Series series;
    series.title = "batch " + std::to_string(result.profiles[p].batch);
    series.connect = true;
    series.color = kColors[p % 5];
    series.point_type = static_cast<int>(7 + 2 * (p % 3));
    for (size_t i = 0; i < result.blocks.size(); ++i) {
      const BlockMedians m = medians_of(result, i);
      series.x.push_back(static_cast<double>(i));
      series.y.push_back((m.forward_ms[p] + m.backward_ms[p]) /
                         static_cast<double>(result.profiles[p].batch));
    }
    figure.series.push_back(series);
  }
  figure.title = report::format(
      "b3 profile: forward + backward ms per image, by layer | %s, %s, %s",
      plan.device_text.c_str(), report::precision_name(plan.amp).c_str(), c.format.c_str());
  figure.subtitle =
      report::format("median over %lld profiled steps per batch size; %lldx%lld synthetic images",
                     static_cast<long long>(c.repeats), static_cast<long long>(c.image_size),
                     static_cast<long long>(c.image_size));
  for (size_t i = 0; i < result.blocks.size(); ++i) {
    figure.x_tics.push_back(static_cast<double>(i));
    figure.x_tic_labels.push_back(result.blocks[i].name);
  }
  figure.x_label = "top-level block";
  figure.y_label = "ms per image (forward + backward)";
  figure.y_from_zero = true;
  return figure;
}

ProfileFiles write_profile_report(const std::filesystem::path& dir, const ProfilePlan& plan,
                                  const ProfileResult& result) {
  ProfileFiles files;
  files.plot = plot::write_plot(dir / "profile", profile_figure(plan, result));
  files.markdown = profile_markdown(plan, result, files.plot);
  report::write_text_atomically(dir / "profile.md", files.markdown);
  report::write_text_atomically(dir / "profile.csv", profile_csv(plan, result));
  if (plan.device.is_cuda())
    report::write_text_atomically(dir / "cudnn_algorithms.txt", result.algorithm_report);
  return files;
}

}  // namespace b3::experiment
