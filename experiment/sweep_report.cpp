// The sweep's JSON, CSV, Markdown and plot, and the side-by-side with another
// tool's results (see sweep_report.h).
#include "experiment/sweep_report.h"

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "experiment/report.h"
#include "tensor/device.h"

namespace b3::experiment {

namespace {

using report::format;
using report::SampleSummary;

nlohmann::json number_or_null(double v) {
  if (std::isnan(v) || std::isinf(v)) return nullptr;
  return v;
}

nlohmann::json optional_json(const std::optional<double>& v) {
  if (!v) return nullptr;
  return *v;
}

nlohmann::json summary_json(const SampleSummary& s) {
  return {{"count", s.count},
          {"mean", number_or_null(s.mean)},
          {"std", number_or_null(s.std)},
          {"min", number_or_null(s.min)},
          {"max", number_or_null(s.max)}};
}

nlohmann::json comparison_json(const report::Comparison& c) {
  return {{"relative_difference", number_or_null(c.relative)},
          {"t", number_or_null(c.test.t)},
          {"df", number_or_null(c.test.df)},
          {"p_value", number_or_null(c.test.p_value)},
          {"significant", c.significant},
          {"verdict", c.verdict}};
}

// SampleSummary back from results.json (either tool's).
SampleSummary summary_from_json(const nlohmann::json& j) {
  SampleSummary s;
  auto get = [&](const char* key) {
    return j.contains(key) && j[key].is_number() ? j[key].get<double>() : report::kNaN;
  };
  s.count = j.value("count", int64_t{0});
  s.mean = get("mean");
  s.std = get("std");
  s.min = get("min");
  s.max = get("max");
  return s;
}

nlohmann::json config_json(const SweepConfig& config, const SweepContext& context) {
  const TrainRunConfig& base = config.base;
  return {{"device", base.device},
          {"device_name", context.device_name},
          {"dtype", context.dtype},
          {"layout", base.format},
          {"model", base.model},
          {"parameters", context.parameters},
          {"image_size", base.image_size},
          {"data", context.data},
          {"epochs", base.steps > 0 ? nlohmann::json(nullptr) : nlohmann::json(base.epochs)},
          {"steps", base.steps},
          {"train_limit", base.train_limit},
          {"validation_size", base.validation_size},
          {"validation", config.validation},
          {"test", config.test},
          {"test_limit", base.test_limit},
          {"bn_recalibrate_batches", base.bn_recalibrate},
          {"optimizer", base.optimizer},
          {"lr", base.lr},
          {"seed", base.seed},
          {"seed_rule", "repeat r (1-based) uses seed + r - 1"},
          {"batch_sizes", config.batch_sizes},
          {"world_size", config.world_size},
          {"batch_sizes_are", config.world_size > 1 ? "per rank" : "per step"},
          {"repeats", config.repeats},
          {"order", config.shuffle ? "round-robin, shuffled within each round" : "round-robin"},
          {"cooldown_seconds", config.cooldown_seconds},
          {"warmup_steps", config.warmup_steps},
          {"gpu_sampling", context.gpu_note}};
}

nlohmann::json gpu_json(const std::optional<gpu::GpuSampleStats>& gpu) {
  if (!gpu) return nullptr;
  return {{"samples", gpu->samples},
          {"clock_mean_mhz", gpu->clock_mean_mhz},
          {"clock_min_mhz", gpu->clock_min_mhz},
          {"clock_max_mhz", gpu->clock_max_mhz},
          {"temperature_mean_c", gpu->temperature_mean_c},
          {"temperature_max_c", gpu->temperature_max_c},
          {"power_mean_w", gpu->power_mean_w},
          {"power_max_w", gpu->power_max_w},
          {"throttle_reasons", gpu::throttle_reason_names(gpu->throttle_reasons_seen)}};
}

nlohmann::json run_json(const RunRecord& r) {
  return {{"order", r.order},
          {"batch_size", r.batch_size},
          {"global_batch_size", r.global_batch_size},
          {"repeat", r.repeat},
          {"seed", r.seed},
          {"started", r.started},
          {"steps", r.steps},
          {"images", r.images},
          {"train_seconds", r.train_seconds},
          {"images_per_second", r.images_per_second},
          {"validation_accuracy", optional_json(r.validation_accuracy)},
          {"test_accuracy", optional_json(r.test_accuracy)},
          {"test_seconds", optional_json(r.test_seconds)},
          {"test_accuracy_recalibrated", optional_json(r.test_recalibrated_accuracy)},
          {"test_images", r.test_images},
          {"gpu", gpu_json(r.gpu)}};
}

nlohmann::json batch_json(const BatchSummary& s) {
  return {
      {"batch_size", s.batch_size},
      {"category", report::size_category(s.batch_size)},
      {"runs", s.images_per_second.count},
      {"train_seconds", summary_json(s.train_seconds)},
      {"images_per_second", summary_json(s.images_per_second)},
      {"inference_seconds", summary_json(s.inference_seconds)},
      {"test_accuracy_percent", summary_json(s.test_accuracy)},
      {"validation_accuracy_percent", summary_json(s.validation_accuracy)},
      {"test_accuracy_recalibrated_percent", summary_json(s.test_recalibrated_accuracy)},
      {"relative_throughput", s.relative_throughput},
      {"vs_best", comparison_json(s.vs_best)},
      {"vs_previous", s.vs_previous ? comparison_json(*s.vs_previous) : nlohmann::json(nullptr)},
      {"previous_batch_size", s.vs_previous ? nlohmann::json(s.previous_batch) : nullptr}};
}

// The other tool's results.json, checked to be a sweep result.
nlohmann::json read_sweep_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("--compare: cannot read " + path);
  nlohmann::json theirs;
  try {
    in >> theirs;
  } catch (const std::exception& e) {
    throw std::invalid_argument("--compare: " + path + " is not JSON: " + e.what());
  }
  if (theirs.value("schema", std::string()) != kSweepSchema || !theirs.contains("summary")) {
    throw std::invalid_argument("--compare: " + path +
                                " is not a sweep result (schema \"b3-sweep/1\" with a summary; "
                                "experiment/pytorch_b3.py and b3 sweep write it)");
  }
  return theirs;
}

// Settings that make the comparison unfair when they differ.
std::string differing_settings(const nlohmann::json& ours, const nlohmann::json& theirs,
                               const std::string& tool) {
  std::string notes;
  for (const char* key : {"device", "dtype", "layout", "model", "image_size", "steps", "epochs",
                          "train_limit", "optimizer", "lr"}) {
    const nlohmann::json& a = ours["config"][key];
    const nlohmann::json b =
        theirs["config"].contains(key) ? theirs["config"][key] : nlohmann::json(nullptr);
    if (a != b)
      notes += format("  differs: %s = %s (b3) vs %s (%s)\n", key, a.dump().c_str(),
                      b.dump().c_str(), tool.c_str());
  }
  return notes;
}

void write_header(std::ostringstream& md, const SweepConfig& config, const SweepResult& result) {
  const TrainRunConfig& base = config.base;
  const SweepContext& context = result.context;
  md << "# b3 sweep: batch size vs training speed\n\n"
     << "- device: " << context.device << " (" << context.device_name << ")\n"
     << "- dtype: " << context.dtype << "; layout: " << context.layout << "; model: " << base.model
     << " (" << context.parameters << " parameters), Adam lr " << base.lr << "\n"
     << "- data: " << context.data << "; images " << base.image_size << "x" << base.image_size
     << "\n";
  if (config.world_size > 1) {
    md << "- data parallel: " << config.world_size
       << " processes (mpirun), as PyTorch's DDP: every batch size below is per rank, the "
          "global batch is "
       << config.world_size << " x that; images/s are over all ranks\n";
  }
  if (base.steps > 0) {
    md << "- length: " << base.steps << " optimizer steps per run (not whole epochs)\n";
  } else {
    md << "- length: " << base.epochs << " epoch(s) per run, drop_last\n";
  }
  md << "- runs: " << config.repeats << " per batch size, " << result.runs.size()
     << " in all, interleaved round-robin (repeat r of every batch size before repeat r+1"
     << (config.shuffle ? "; order shuffled within each round" : "") << "); cool-down "
     << config.cooldown_seconds << " s between runs; " << config.warmup_steps
     << " warm-up steps before the first run, discarded; repeat r uses seed " << base.seed
     << "+r-1\n"
     << "- GPU clock, temperature, power: " << context.gpu_note << "\n"
     << "- b3 " << (built_with_cuda() ? "with" : "without") << " the CUDA backend, " << utc_now()
     << "\n\n";
}

void write_batch_table(std::ostringstream& md, const SweepConfig& config,
                       const std::vector<BatchSummary>& rows) {
  md << "## Per batch size: mean ± sample std over " << config.repeats << " runs\n\n"
     << "| batch | kind | runs | train time (s) | images/s | relative to best | beyond spread vs "
        "best | beyond spread vs next smaller | inference (s) | test accuracy (%) | validation "
        "accuracy (%) | test accuracy, BN recalibrated (%) |\n"
     << "|---:|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|\n";
  double best_rate = 0;
  for (const BatchSummary& s : rows) {
    if (s.relative_throughput == 1.0) best_rate = s.images_per_second.mean;
    const std::string vs_previous =
        s.vs_previous
            ? s.vs_previous->verdict + format(" vs %lld", static_cast<long long>(s.previous_batch))
            : "-";
    md << format("| %lld | %s | %lld | %s | %s | %.3f | %s | %s | %s | %s | %s | %s |\n",
                 static_cast<long long>(s.batch_size), report::size_category(s.batch_size).c_str(),
                 static_cast<long long>(s.images_per_second.count),
                 report::format_mean_std(s.train_seconds, 3).c_str(),
                 report::format_mean_std(s.images_per_second, 1).c_str(), s.relative_throughput,
                 s.vs_best.verdict.c_str(), vs_previous.c_str(),
                 report::format_mean_std(s.inference_seconds, 3).c_str(),
                 report::format_mean_std(s.test_accuracy, 2).c_str(),
                 report::format_mean_std(s.validation_accuracy, 2).c_str(),
                 report::format_mean_std(s.test_recalibrated_accuracy, 2).c_str());
  }
  md << "\nBest: batch " << best_batch_size(rows) << " at " << format("%.1f", best_rate)
     << " images/s (mean). Train time counts the training steps only (waits for data "
        "included; validation and test excluded); images/s = images trained / train time. "
        "Inference: one pass over the test set in eval mode"
     << (config.test ? "" : " (skipped: --no-test)") << ". "
     << (config.base.bn_recalibrate > 0
             ? format("BN recalibrated: BatchNorm's running statistics recomputed as the "
                      "average over the first %lld training batches, then the test set again. ",
                      static_cast<long long>(config.base.bn_recalibrate))
             : std::string())
     << "With --steps, train time grows with the batch size (more images per step): compare "
        "images/s.\n\n";
}

std::string percent_or_na(const std::optional<double>& v) {
  return v ? format("%.2f", 100.0 * *v) : "n/a";
}

void write_runs_table(std::ostringstream& md, const std::vector<RunRecord>& runs) {
  md << "## Every run, in the order run\n\n"
     << "| # | batch | repeat | seed | started (UTC) | steps | images | train (s) | images/s | "
        "validation acc (%) | test acc (%) | SM clock MHz mean (min) | max temp (C) | power (W) "
        "| throttling |\n"
     << "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|\n";
  for (const RunRecord& r : runs) {
    md << format("| %lld | %lld | %lld | %llu | %s | %lld | %lld | %.3f | %.1f | %s | %s | ",
                 static_cast<long long>(r.order), static_cast<long long>(r.batch_size),
                 static_cast<long long>(r.repeat), static_cast<unsigned long long>(r.seed),
                 r.started.c_str(), static_cast<long long>(r.steps),
                 static_cast<long long>(r.images), r.train_seconds, r.images_per_second,
                 percent_or_na(r.validation_accuracy).c_str(),
                 percent_or_na(r.test_accuracy).c_str());
    if (r.gpu && r.gpu->samples > 0) {
      md << format("%.0f (%.0f) | %.0f | %.0f | %s |\n", r.gpu->clock_mean_mhz,
                   r.gpu->clock_min_mhz, r.gpu->temperature_max_c, r.gpu->power_mean_w,
                   gpu::throttle_reason_names(r.gpu->throttle_reasons_seen).c_str());
    } else {
      md << "n/a | n/a | n/a | n/a |\n";
    }
  }
}

void write_plot_section(std::ostringstream& md, const SweepConfig& config,
                        const SweepContext& context, const plot::PlotFiles& plot) {
  md << "\n## Plot\n\n";
  if (plot.rendered) {
    md << "![images/s against batch size](results.png)\n\n";
  } else {
    md << "Not rendered: " << plot.note << "\n\n";
  }
  md << "results.png: images/s against batch size, " << context.device << ", " << context.dtype
     << ", " << context.layout << "; mean ± 1 sample std over " << config.repeats
     << " runs per batch size; red = power of two, blue = other multiple of 8, grey = other; "
        "dashed lines at powers of two. Numbers in results.dat, script in results.gp.\n";
}

}  // namespace

nlohmann::json sweep_json(const SweepConfig& config, const SweepResult& result) {
  nlohmann::json runs = nlohmann::json::array();
  for (const RunRecord& r : result.runs) runs.push_back(run_json(r));
  nlohmann::json summary = nlohmann::json::array();
  for (const BatchSummary& s : result.summary) summary.push_back(batch_json(s));
  return {{"schema", kSweepSchema},
          {"tool", "b3"},
          {"tool_version",
           std::string("b3 (CUDA backend: ") + (built_with_cuda() ? "built" : "not built") + ")"},
          {"created", utc_now()},
          {"config", config_json(config, result.context)},
          {"significance_rule", report::kSignificanceRule},
          {"best_batch_size", best_batch_size(result.summary)},
          {"runs", runs},
          {"summary", summary}};
}

std::string summary_csv(const std::vector<BatchSummary>& rows) {
  std::string csv =
      "batch_size,category,runs,train_seconds_mean,train_seconds_std,images_per_second_mean,"
      "images_per_second_std,relative_throughput,p_vs_best,significant_vs_best,"
      "inference_seconds_mean,inference_seconds_std,test_accuracy_mean,test_accuracy_std,"
      "validation_accuracy_mean,validation_accuracy_std,test_accuracy_recalibrated_mean,"
      "test_accuracy_recalibrated_std\n";
  auto n = [](double v) { return std::isnan(v) ? std::string() : format("%.6g", v); };
  for (const BatchSummary& s : rows) {
    csv += format("%lld,%s,%lld,", static_cast<long long>(s.batch_size),
                  report::size_category(s.batch_size).c_str(),
                  static_cast<long long>(s.images_per_second.count));
    csv += n(s.train_seconds.mean) + "," + n(s.train_seconds.std) + "," +
           n(s.images_per_second.mean) + "," + n(s.images_per_second.std) + "," +
           n(s.relative_throughput) + "," + n(s.vs_best.test.p_value) + "," +
           (s.vs_best.significant ? "yes" : "no") + "," + n(s.inference_seconds.mean) + "," +
           n(s.inference_seconds.std) + "," + n(s.test_accuracy.mean) + "," +
           n(s.test_accuracy.std) + "," + n(s.validation_accuracy.mean) + "," +
           n(s.validation_accuracy.std) + "," + n(s.test_recalibrated_accuracy.mean) + "," +
           n(s.test_recalibrated_accuracy.std) + "\n";
  }
  return csv;
}

std::string runs_csv(const std::vector<RunRecord>& runs) {
  std::string csv =
      "order,batch_size,repeat,seed,started,steps,images,train_seconds,images_per_second,"
      "validation_accuracy,test_accuracy,test_seconds,gpu_samples,sm_clock_mean_mhz,"
      "sm_clock_min_mhz,temperature_max_c,power_mean_w,throttle_reasons,"
      "test_accuracy_recalibrated\n";
  auto n = [](const std::optional<double>& v) { return v ? format("%.6g", *v) : std::string(); };
  for (const RunRecord& r : runs) {
    csv += format("%lld,%lld,%lld,%llu,%s,%lld,%lld,%.6f,%.4f,", static_cast<long long>(r.order),
                  static_cast<long long>(r.batch_size), static_cast<long long>(r.repeat),
                  static_cast<unsigned long long>(r.seed), r.started.c_str(),
                  static_cast<long long>(r.steps), static_cast<long long>(r.images),
                  r.train_seconds, r.images_per_second);
    csv += n(r.validation_accuracy) + "," + n(r.test_accuracy) + "," + n(r.test_seconds) + ",";
    if (r.gpu) {
      csv += format("%lld,%.0f,%.0f,%.0f,%.1f,\"%s\"", static_cast<long long>(r.gpu->samples),
                    r.gpu->clock_mean_mhz, r.gpu->clock_min_mhz, r.gpu->temperature_max_c,
                    r.gpu->power_mean_w,
                    gpu::throttle_reason_names(r.gpu->throttle_reasons_seen).c_str());
    } else {
      csv += ",,,,,";
    }
    csv += ',';  // (appended piecewise: GCC 12 misreads "," + string as an overlap)
    csv += n(r.test_recalibrated_accuracy);
    csv += '\n';
  }
  return csv;
}

CompareTable compare_with(const std::string& path, const nlohmann::json& ours,
                          const std::vector<BatchSummary>& rows) {
  const nlohmann::json theirs = read_sweep_json(path);
  const std::string tool = theirs.value("tool", std::string("other"));
  CompareTable table;
  table.notes = differing_settings(ours, theirs, tool);
  std::map<int64_t, nlohmann::json> other;
  for (const nlohmann::json& s : theirs["summary"]) other[s.value("batch_size", int64_t{0})] = s;
  std::ostringstream md;
  md << "| batch | b3 images/s | " << tool << " images/s | b3 / " << tool << " | b3 train (s) | "
     << tool << " train (s) | time b3 / " << tool << " | beyond spread |\n"
     << "|---:|---:|---:|---:|---:|---:|---:|---|\n";
  bool any = false;
  for (const BatchSummary& s : rows) {
    auto it = other.find(s.batch_size);
    if (it == other.end()) continue;
    any = true;
    const SampleSummary their_rate = summary_from_json(it->second["images_per_second"]);
    const SampleSummary their_time = summary_from_json(it->second["train_seconds"]);
    const report::Comparison c = report::compare(s.images_per_second, their_rate);
    md << format(
        "| %lld | %s | %s | %.3f | %s | %s | %.3f | %s |\n", static_cast<long long>(s.batch_size),
        report::format_mean_std(s.images_per_second, 1).c_str(),
        report::format_mean_std(their_rate, 1).c_str(), s.images_per_second.mean / their_rate.mean,
        report::format_mean_std(s.train_seconds, 3).c_str(),
        report::format_mean_std(their_time, 3).c_str(), s.train_seconds.mean / their_time.mean,
        c.verdict.c_str());
  }
  if (!any) {
    table.notes += "  no batch size of this sweep is in " + path + "\n";
    return table;
  }
  const nlohmann::json& their_config = theirs["config"];
  table.markdown = md.str() + "\n" + tool + ": " + theirs.value("tool_version", std::string("")) +
                   ", device " + their_config.value("device_name", std::string("?")) + ", dtype " +
                   their_config.value("dtype", std::string("?")) + ", layout " +
                   their_config.value("layout", std::string("?")) + ", " +
                   std::to_string(their_config.value("repeats", int64_t{0})) +
                   " runs per batch size (" + path + ").\n";
  return table;
}

std::string sweep_markdown(const SweepConfig& config, const SweepResult& result,
                           const plot::PlotFiles& plot, const CompareTable* comparison) {
  std::ostringstream md;
  write_header(md, config, result);
  write_batch_table(md, config, result.summary);
  md << "## How differences are judged\n\n" << report::kSignificanceRule << "\n\n";
  if (comparison != nullptr) {
    md << "## Beside the other tool (--compare)\n\n";
    if (!comparison->markdown.empty()) md << comparison->markdown << "\n";
    if (!comparison->notes.empty()) md << "Notes:\n\n```\n" << comparison->notes << "```\n\n";
  }
  write_runs_table(md, result.runs);
  write_plot_section(md, config, result.context, plot);
  return md.str();
}

plot::Figure sweep_figure(const SweepConfig& config, const SweepResult& result) {
  const TrainRunConfig& base = config.base;
  const SweepContext& context = result.context;
  const std::vector<BatchSummary>& rows = result.summary;
  plot::Figure figure;
  figure.title = format("b3 sweep: %s, images/s vs batch size | %s (%s), %s, %s",
                        base.model.c_str(), context.device.c_str(), context.device_name.c_str(),
                        context.dtype.c_str(), context.layout.c_str());
  const std::string length =
      base.steps > 0 ? format("%lld steps per run", static_cast<long long>(base.steps))
                     : format("%lld epoch(s) per run", static_cast<long long>(base.epochs));
  figure.subtitle = format(
      "mean +- 1 sample std over %lld runs per batch size (interleaved); "
      "%lldx%lld %s; %s",
      static_cast<long long>(config.repeats), static_cast<long long>(base.image_size),
      static_cast<long long>(base.image_size), context.data_short.c_str(), length.c_str());
  figure.x_label = "batch size";
  figure.y_label = "training images/s";
  figure.y_from_zero = true;
  plot::Series all{"mean, all sizes", {}, {}, {}, true, "#bbbbbb", 0};
  std::map<std::string, plot::Series> by_kind;
  by_kind["power of two"] = {"power of two", {}, {}, {}, false, "#d62728", 7};
  by_kind["multiple of 8"] = {"multiple of 8", {}, {}, {}, false, "#1f77b4", 5};
  by_kind["other"] = {"other", {}, {}, {}, false, "#555555", 9};
  for (const BatchSummary& s : rows) {
    const double x = static_cast<double>(s.batch_size);
    all.x.push_back(x);
    all.y.push_back(s.images_per_second.mean);
    plot::Series& kind = by_kind[report::size_category(s.batch_size)];
    kind.x.push_back(x);
    kind.y.push_back(s.images_per_second.mean);
    kind.error.push_back(s.images_per_second.std);
    figure.x_tics.push_back(x);
  }
  figure.series.push_back(all);
  for (const char* name : {"power of two", "multiple of 8", "other"}) {
    if (!by_kind[name].y.empty()) figure.series.push_back(by_kind[name]);
  }
  if (rows.empty()) return figure;
  const int64_t smallest = rows.front().batch_size, largest = rows.back().batch_size;
  for (int64_t p = 1; p <= largest; p *= 2) {
    if (p >= smallest) figure.x_marks.push_back(static_cast<double>(p));
  }
  figure.log_x = largest >= 4 * smallest;
  return figure;
}

SweepReport write_sweep_report(const std::filesystem::path& dir, const SweepConfig& config,
                               const SweepResult& result, const std::string& compare_path) {
  SweepReport written;
  written.json = sweep_json(config, result);
  if (!compare_path.empty())
    written.comparison = compare_with(compare_path, written.json, result.summary);
  written.plot = plot::write_plot(dir / "results", sweep_figure(config, result));
  written.markdown = sweep_markdown(config, result, written.plot,
                                    written.comparison ? &*written.comparison : nullptr);
  report::write_text_atomically(dir / "results.json", written.json.dump(2) + "\n");
  report::write_text_atomically(dir / "results.csv", summary_csv(result.summary));
  report::write_text_atomically(dir / "runs.csv", runs_csv(result.runs));
  report::write_text_atomically(dir / "results.md", written.markdown);
  return written;
}

}  // namespace b3::experiment
