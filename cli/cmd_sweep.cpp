// `b3 sweep`: the batch-size experiment, done so that a skeptic can accept it.
//
//   b3 sweep --batch-sizes 100,127,128,129,156,511,512,513 --repeats 3 [--epochs N | --steps N]
//
// Each batch size is trained --repeats times by run_training() (train/train_run.h,
// the same code as `b3 train`). Runs are interleaved round-robin: repeat r of
// every batch size runs before repeat r + 1 of any, so slow drift (clock,
// temperature, other load) spreads over all sizes instead of favouring the
// first; --shuffle also randomizes the order within each round, --cooldown
// waits between runs. On a GPU, NVML samples SM clock, temperature and power
// during every run (experiment/nvml.h). Repeat r uses seed + r for weights,
// split and shuffling, so accuracy spread is real spread.
//
// Per batch size the report gives mean and sample standard deviation of train
// time, images/s, inference time and accuracy, throughput relative to the
// best, and whether each difference is larger than the run-to-run spread
// (experiment/report.h states the rule). Files in --out:
//   results.md    the tables, the rule, every run in order, the plot's caption
//   results.csv   one row per batch size;  runs.csv  one row per run
//   results.json  config, runs and summary (schema "b3-sweep/1", which
//                 experiment/pytorch_b3.py writes too)
//   results.png   images/s against batch size with error bars (gnuplot;
//                 results.dat and results.gp beside it)
// --compare <results.json of pytorch_b3.py> adds a side-by-side with ratios.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "cli/commands.h"
#include "cli/options.h"
#include "experiment/nvml.h"
#include "experiment/plot.h"
#include "experiment/report.h"
#include "tensor/device.h"
#include "train/train_run.h"

namespace b3::cli {

namespace {

using report::format;
using report::SampleSummary;

struct SweepArgs {
  TrainRunConfig base;
  std::string batch_sizes = "100,127,128,129,156,511,512,513";
  int64_t repeats = 3;
  double cooldown_seconds = 0.0;
  int64_t warmup_steps = 2;
  bool shuffle = false;
  bool no_test = false;
  bool no_validation = false;
  std::string out = "sweep-results";
  std::string compare;
};

struct RunRecord {
  int64_t order = 0;  // 1-based position in the sequence of runs
  int64_t batch_size = 0;
  int64_t repeat = 0;  // 1-based
  uint64_t seed = 0;
  std::string started;  // UTC, ISO 8601
  int64_t steps = 0, images = 0;
  double train_seconds = 0.0, images_per_second = 0.0;
  std::optional<double> validation_accuracy, test_accuracy, test_seconds;
  int64_t test_images = 0;
  std::optional<gpu::GpuSampleStats> gpu;
};

struct BatchSummary {
  int64_t batch_size = 0;
  SampleSummary train_seconds, images_per_second, inference_seconds, test_accuracy,
      validation_accuracy;
  double relative_throughput = report::kNaN;      // mean images/s / best mean images/s
  report::Comparison vs_best;                     // images/s against the best batch size
  std::optional<report::Comparison> vs_previous;  // against the next smaller batch size
  int64_t previous_batch = 0;
};

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm parts{};
  gmtime_r(&now, &parts);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &parts);
  return text;
}

std::string layout_name(const std::string& format) {
  return format == "nhwc" ? "nhwc (channels_last)" : "nchw (contiguous)";
}

// The dtype a run trains in: f32 on the CPU (or with --no-amp), else mixed
// precision as torch.cuda.amp (amp_enabled() in train/train_run.h).
std::string run_dtype(const TrainRunConfig& config) {
  return amp_enabled(config) ? "mixed f16 (autocast, f32 master weights, loss scaling)" : "f32";
}

// Gives every run enough epochs for --steps (train() stops at max_steps).
int64_t epochs_for_steps(int64_t steps, int64_t batch, int64_t train_size) {
  const int64_t per_epoch = std::max<int64_t>(1, train_size / batch);
  return std::max<int64_t>(1, (steps + per_epoch - 1) / per_epoch);
}

SampleSummary summary_of(const std::vector<RunRecord>& runs, int64_t batch,
                         const std::function<std::optional<double>(const RunRecord&)>& field) {
  std::vector<double> values;
  for (const RunRecord& r : runs) {
    if (r.batch_size != batch) continue;
    if (const std::optional<double> v = field(r)) values.push_back(*v);
  }
  return report::summarize(values);
}

std::vector<BatchSummary> summarize_runs(const std::vector<RunRecord>& runs,
                                         std::vector<int64_t> batch_sizes) {
  std::sort(batch_sizes.begin(), batch_sizes.end());
  std::vector<BatchSummary> rows;
  for (int64_t b : batch_sizes) {
    BatchSummary s;
    s.batch_size = b;
    s.train_seconds = summary_of(runs, b, [](const RunRecord& r) { return r.train_seconds; });
    s.images_per_second =
        summary_of(runs, b, [](const RunRecord& r) { return r.images_per_second; });
    s.inference_seconds = summary_of(runs, b, [](const RunRecord& r) { return r.test_seconds; });
    s.test_accuracy = summary_of(runs, b, [](const RunRecord& r) {
      return r.test_accuracy ? std::optional<double>(100.0 * *r.test_accuracy) : std::nullopt;
    });
    s.validation_accuracy = summary_of(runs, b, [](const RunRecord& r) {
      return r.validation_accuracy ? std::optional<double>(100.0 * *r.validation_accuracy)
                                   : std::nullopt;
    });
    rows.push_back(s);
  }
  const auto best = std::max_element(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    return a.images_per_second.mean < b.images_per_second.mean;
  });
  for (size_t i = 0; i < rows.size(); ++i) {
    BatchSummary& s = rows[i];
    s.relative_throughput = s.images_per_second.mean / best->images_per_second.mean;
    s.vs_best = report::compare(s.images_per_second, best->images_per_second);
    if (&s == &*best) s.vs_best.verdict = "(best)";
    if (i > 0) {
      s.vs_previous = report::compare(s.images_per_second, rows[i - 1].images_per_second);
      s.previous_batch = rows[i - 1].batch_size;
    }
  }
  return rows;
}

nlohmann::json summary_json(const SampleSummary& s) {
  auto number = [](double v) -> nlohmann::json {
    if (std::isnan(v)) return nullptr;
    return v;
  };
  return {{"count", s.count},
          {"mean", number(s.mean)},
          {"std", number(s.std)},
          {"min", number(s.min)},
          {"max", number(s.max)}};
}

nlohmann::json comparison_json(const report::Comparison& c) {
  auto number = [](double v) -> nlohmann::json {
    if (std::isnan(v) || std::isinf(v)) return nullptr;
    return v;
  };
  return {{"relative_difference", number(c.relative)},
          {"t", number(c.test.t)},
          {"df", number(c.test.df)},
          {"p_value", number(c.test.p_value)},
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

struct Context {  // what every figure and table states
  std::string device, device_name, dtype, layout, data, gpu_note;
  std::string data_short;  // "synthetic" or "CIFAR-10 / image folder", for plot titles
  int64_t parameters = 0;
};

nlohmann::json results_json(const SweepArgs& args, const TrainRunConfig& base,
                            const Context& context, const std::vector<int64_t>& batch_sizes,
                            const std::vector<RunRecord>& runs,
                            const std::vector<BatchSummary>& rows) {
  nlohmann::json config = {
      {"device", base.device},
      {"device_name", context.device_name},
      {"dtype", context.dtype},
      {"layout", base.format},
      {"model", base.model},
      {"parameters", context.parameters},
      {"image_size", base.image_size},
      {"data", context.data},
      {"epochs", args.base.steps > 0 ? nlohmann::json(nullptr) : nlohmann::json(base.epochs)},
      {"steps", base.steps},
      {"train_limit", base.train_limit},
      {"validation_size", base.validation_size},
      {"validation", !args.no_validation},
      {"test", !args.no_test},
      {"test_limit", base.test_limit},
      {"optimizer", base.optimizer},
      {"lr", base.lr},
      {"seed", base.seed},
      {"seed_rule", "repeat r (1-based) uses seed + r - 1"},
      {"batch_sizes", batch_sizes},
      {"repeats", args.repeats},
      {"order", args.shuffle ? "round-robin, shuffled within each round" : "round-robin"},
      {"cooldown_seconds", args.cooldown_seconds},
      {"warmup_steps", args.warmup_steps},
      {"gpu_sampling", context.gpu_note}};
  nlohmann::json run_list = nlohmann::json::array();
  for (const RunRecord& r : runs) {
    nlohmann::json gpu = nullptr;
    if (r.gpu) {
      gpu = {{"samples", r.gpu->samples},
             {"clock_mean_mhz", r.gpu->clock_mean_mhz},
             {"clock_min_mhz", r.gpu->clock_min_mhz},
             {"clock_max_mhz", r.gpu->clock_max_mhz},
             {"temperature_mean_c", r.gpu->temperature_mean_c},
             {"temperature_max_c", r.gpu->temperature_max_c},
             {"power_mean_w", r.gpu->power_mean_w},
             {"power_max_w", r.gpu->power_max_w},
             {"throttle_reasons", gpu::throttle_reason_names(r.gpu->throttle_reasons_seen)}};
    }
    auto optional = [](const std::optional<double>& v) -> nlohmann::json {
      if (!v) return nullptr;
      return *v;
    };
    run_list.push_back({{"order", r.order},
                        {"batch_size", r.batch_size},
                        {"repeat", r.repeat},
                        {"seed", r.seed},
                        {"started", r.started},
                        {"steps", r.steps},
                        {"images", r.images},
                        {"train_seconds", r.train_seconds},
                        {"images_per_second", r.images_per_second},
                        {"validation_accuracy", optional(r.validation_accuracy)},
                        {"test_accuracy", optional(r.test_accuracy)},
                        {"test_seconds", optional(r.test_seconds)},
                        {"test_images", r.test_images},
                        {"gpu", gpu}});
  }
  nlohmann::json summary = nlohmann::json::array();
  int64_t best_batch = 0;
  for (const BatchSummary& s : rows) {
    if (s.relative_throughput == 1.0) best_batch = s.batch_size;
    summary.push_back(
        {{"batch_size", s.batch_size},
         {"category", report::size_category(s.batch_size)},
         {"runs", s.images_per_second.count},
         {"train_seconds", summary_json(s.train_seconds)},
         {"images_per_second", summary_json(s.images_per_second)},
         {"inference_seconds", summary_json(s.inference_seconds)},
         {"test_accuracy_percent", summary_json(s.test_accuracy)},
         {"validation_accuracy_percent", summary_json(s.validation_accuracy)},
         {"relative_throughput", s.relative_throughput},
         {"vs_best", comparison_json(s.vs_best)},
         {"vs_previous", s.vs_previous ? comparison_json(*s.vs_previous) : nlohmann::json(nullptr)},
         {"previous_batch_size", s.vs_previous ? nlohmann::json(s.previous_batch) : nullptr}});
  }
  return {{"schema", "b3-sweep/1"},
          {"tool", "b3"},
          {"tool_version",
           std::string("b3 (CUDA backend: ") + (built_with_cuda() ? "built" : "not built") + ")"},
          {"created", utc_now()},
          {"config", config},
          {"significance_rule", report::kSignificanceRule},
          {"best_batch_size", best_batch},
          {"runs", run_list},
          {"summary", summary}};
}

std::string results_csv(const std::vector<BatchSummary>& rows) {
  std::string csv =
      "batch_size,category,runs,train_seconds_mean,train_seconds_std,images_per_second_mean,"
      "images_per_second_std,relative_throughput,p_vs_best,significant_vs_best,"
      "inference_seconds_mean,inference_seconds_std,test_accuracy_mean,test_accuracy_std,"
      "validation_accuracy_mean,validation_accuracy_std\n";
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
           n(s.validation_accuracy.std) + "\n";
  }
  return csv;
}

std::string runs_csv(const std::vector<RunRecord>& runs) {
  std::string csv =
      "order,batch_size,repeat,seed,started,steps,images,train_seconds,images_per_second,"
      "validation_accuracy,test_accuracy,test_seconds,gpu_samples,sm_clock_mean_mhz,"
      "sm_clock_min_mhz,temperature_max_c,power_mean_w,throttle_reasons\n";
  auto n = [](const std::optional<double>& v) { return v ? format("%.6g", *v) : std::string(); };
  for (const RunRecord& r : runs) {
    csv += format("%lld,%lld,%lld,%llu,%s,%lld,%lld,%.6f,%.4f,", static_cast<long long>(r.order),
                  static_cast<long long>(r.batch_size), static_cast<long long>(r.repeat),
                  static_cast<unsigned long long>(r.seed), r.started.c_str(),
                  static_cast<long long>(r.steps), static_cast<long long>(r.images),
                  r.train_seconds, r.images_per_second);
    csv += n(r.validation_accuracy) + "," + n(r.test_accuracy) + "," + n(r.test_seconds) + ",";
    if (r.gpu) {
      csv += format("%lld,%.0f,%.0f,%.0f,%.1f,\"%s\"\n", static_cast<long long>(r.gpu->samples),
                    r.gpu->clock_mean_mhz, r.gpu->clock_min_mhz, r.gpu->temperature_max_c,
                    r.gpu->power_mean_w,
                    gpu::throttle_reason_names(r.gpu->throttle_reasons_seen).c_str());
    } else {
      csv += ",,,,,\n";
    }
  }
  return csv;
}

std::string percent_or_na(const std::optional<double>& v) {
  return v ? format("%.2f", 100.0 * *v) : "n/a";
}

// The side-by-side with another results.json (normally pytorch_b3.py's).
struct CompareTable {
  std::string markdown;  // empty when nothing matched
  std::string notes;
};

CompareTable compare_with(const std::string& path, const nlohmann::json& ours,
                          const std::vector<BatchSummary>& rows) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("--compare: cannot read " + path);
  nlohmann::json theirs;
  try {
    in >> theirs;
  } catch (const std::exception& e) {
    throw std::invalid_argument("--compare: " + path + " is not JSON: " + e.what());
  }
  if (theirs.value("schema", std::string()) != "b3-sweep/1" || !theirs.contains("summary")) {
    throw std::invalid_argument("--compare: " + path +
                                " is not a sweep result (schema \"b3-sweep/1\" with a summary; "
                                "experiment/pytorch_b3.py and b3 sweep write it)");
  }
  const std::string tool = theirs.value("tool", std::string("other"));
  CompareTable table;
  // Settings that make the comparison unfair when they differ.
  for (const char* key : {"device", "dtype", "layout", "model", "image_size", "steps", "epochs",
                          "train_limit", "optimizer", "lr"}) {
    const nlohmann::json& a = ours["config"][key];
    const nlohmann::json b =
        theirs["config"].contains(key) ? theirs["config"][key] : nlohmann::json(nullptr);
    if (a != b)
      table.notes += format("  differs: %s = %s (b3) vs %s (%s)\n", key, a.dump().c_str(),
                            b.dump().c_str(), tool.c_str());
  }
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

std::string results_markdown(const SweepArgs& args, const TrainRunConfig& base,
                             const Context& context, const std::vector<RunRecord>& runs,
                             const std::vector<BatchSummary>& rows, const plot::PlotFiles& plot,
                             const CompareTable* comparison) {
  std::ostringstream md;
  const int64_t repeats = args.repeats;
  md << "# b3 sweep: batch size vs training speed\n\n"
     << "- device: " << context.device << " (" << context.device_name << ")\n"
     << "- dtype: " << context.dtype << "; layout: " << context.layout << "; model: " << base.model
     << " (" << context.parameters << " parameters), Adam lr " << base.lr << "\n"
     << "- data: " << context.data << "; images " << base.image_size << "x" << base.image_size
     << "\n";
  if (base.steps > 0) {
    md << "- length: " << base.steps << " optimizer steps per run (not whole epochs)\n";
  } else {
    md << "- length: " << base.epochs << " epoch(s) per run, drop_last\n";
  }
  md << "- runs: " << repeats << " per batch size, " << runs.size()
     << " in all, interleaved round-robin (repeat r of every batch size before repeat r+1"
     << (args.shuffle ? "; order shuffled within each round" : "") << "); cool-down "
     << args.cooldown_seconds << " s between runs; " << args.warmup_steps
     << " warm-up steps before the first run, discarded; repeat r uses seed " << base.seed
     << "+r-1\n"
     << "- GPU clock, temperature, power: " << context.gpu_note << "\n"
     << "- b3 " << (built_with_cuda() ? "with" : "without") << " the CUDA backend, " << utc_now()
     << "\n\n";

  md << "## Per batch size: mean ± sample std over " << repeats << " runs\n\n"
     << "| batch | kind | runs | train time (s) | images/s | relative to best | beyond spread vs "
        "best | beyond spread vs next smaller | inference (s) | test accuracy (%) | validation "
        "accuracy (%) |\n"
     << "|---:|---|---:|---:|---:|---:|---|---|---:|---:|---:|\n";
  int64_t best_batch = 0;
  double best_rate = 0;
  for (const BatchSummary& s : rows) {
    if (s.relative_throughput == 1.0) {
      best_batch = s.batch_size;
      best_rate = s.images_per_second.mean;
    }
    md << format("| %lld | %s | %lld | %s | %s | %.3f | %s | %s | %s | %s | %s |\n",
                 static_cast<long long>(s.batch_size), report::size_category(s.batch_size).c_str(),
                 static_cast<long long>(s.images_per_second.count),
                 report::format_mean_std(s.train_seconds, 3).c_str(),
                 report::format_mean_std(s.images_per_second, 1).c_str(), s.relative_throughput,
                 s.vs_best.verdict.c_str(),
                 s.vs_previous ? (s.vs_previous->verdict +
                                  format(" vs %lld", static_cast<long long>(s.previous_batch)))
                                     .c_str()
                               : "-",
                 report::format_mean_std(s.inference_seconds, 3).c_str(),
                 report::format_mean_std(s.test_accuracy, 2).c_str(),
                 report::format_mean_std(s.validation_accuracy, 2).c_str());
  }
  md << "\nBest: batch " << best_batch << " at " << format("%.1f", best_rate)
     << " images/s (mean). Train time counts the training steps only (waits for data "
        "included; validation and test excluded); images/s = images trained / train time. "
        "Inference: one pass over the test set in eval mode"
     << (args.no_test ? " (skipped: --no-test)" : "") << ". "
     << "With --steps, train time grows with the batch size (more images per step): compare "
        "images/s.\n\n";

  md << "## How differences are judged\n\n" << report::kSignificanceRule << "\n\n";

  if (comparison != nullptr) {
    md << "## Beside the other tool (--compare)\n\n";
    if (!comparison->markdown.empty()) md << comparison->markdown << "\n";
    if (!comparison->notes.empty()) md << "Notes:\n\n```\n" << comparison->notes << "```\n\n";
  }

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
  md << "\n## Plot\n\n";
  if (plot.rendered) {
    md << "![images/s against batch size](results.png)\n\n";
  } else {
    md << "Not rendered: " << plot.note << "\n\n";
  }
  md << "results.png: images/s against batch size, " << context.device << ", " << context.dtype
     << ", " << context.layout << "; mean ± 1 sample std over " << repeats
     << " runs per batch size; red = power of two, blue = other multiple of 8, grey = other; "
        "dashed lines at powers of two. Numbers in results.dat, script in results.gp.\n";
  return md.str();
}

plot::PlotFiles make_plot(const std::filesystem::path& dir, const SweepArgs& args,
                          const TrainRunConfig& base, const Context& context,
                          const std::vector<BatchSummary>& rows) {
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
      static_cast<long long>(args.repeats), static_cast<long long>(base.image_size),
      static_cast<long long>(base.image_size), context.data_short.c_str(), length.c_str());
  figure.x_label = "batch size";
  figure.y_label = "training images/s";
  figure.y_from_zero = true;
  plot::Series all{"mean, all sizes", {}, {}, {}, true, "#bbbbbb", 0};
  std::map<std::string, plot::Series> by_kind;
  by_kind["power of two"] = {"power of two", {}, {}, {}, false, "#d62728", 7};
  by_kind["multiple of 8"] = {"multiple of 8", {}, {}, {}, false, "#1f77b4", 5};
  by_kind["other"] = {"other", {}, {}, {}, false, "#555555", 9};
  int64_t smallest = rows.front().batch_size, largest = rows.back().batch_size;
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
  for (int64_t p = 1; p <= largest; p *= 2) {
    if (p >= smallest) figure.x_marks.push_back(static_cast<double>(p));
  }
  figure.log_x = largest >= 4 * smallest;
  return plot::write_plot(dir / "results", figure);
}

void run_sweep(SweepArgs args, bool image_size_set, bool epochs_set, bool train_limit_set,
               bool validation_size_set, bool test_limit_set) {
  TrainRunConfig& base = args.base;
  // Checks that need no data first, so a typo fails at once.
  const std::vector<int64_t> batch_sizes =
      report::parse_size_list(args.batch_sizes, "--batch-sizes");
  const Device device = config_device(base);
  if (args.repeats < 1)
    throw std::invalid_argument("--repeats must be at least 1, got " +
                                std::to_string(args.repeats));
  if (!args.compare.empty() && !std::filesystem::exists(args.compare))
    throw std::invalid_argument("--compare: " + args.compare + " does not exist");

  std::string notice =
      make_cpu_sized(base, image_size_set, epochs_set || base.steps > 0, train_limit_set);
  if (base.device == "cpu") {
    std::string more;
    if (!validation_size_set) {
      base.validation_size = 1000;
      more += " a 1,000-image validation split";
    }
    if (!test_limit_set) {
      base.test_limit = 1000;
      more += std::string(more.empty() ? "" : ",") + " the first 1,000 test images";
    }
    if (!more.empty()) {
      notice += (notice.empty() ? "CPU sweep: defaults scaled down to" : ";") + more +
                " (set --validation-size, --test-limit)";
    }
  }
  if (!notice.empty()) std::cerr << notice << "\n";
  base.progress = false;
  base.evaluate_test = !args.no_test;
  base.evaluate_validation = !args.no_validation;
  base.evaluate_test_batch_statistics = false;

  // Every batch size must give at least one step: checked before any run.
  const int64_t train_size = training_set_size(base);
  for (int64_t b : batch_sizes) {
    if (b > train_size) {
      throw std::invalid_argument(
          "--batch-sizes: batch size " + std::to_string(b) + " cannot fit: this run has only " +
          std::to_string(train_size) + " training images (after the " +
          std::to_string(base.validation_size) + "-image validation split" +
          (base.train_limit > 0 ? " and --train-limit " + std::to_string(base.train_limit) : "") +
          "), so the largest batch size is " + std::to_string(train_size));
    }
  }

  const std::filesystem::path dir = args.out;
  std::filesystem::create_directories(dir);

  Context context;
  context.device = device.str();
  context.dtype = run_dtype(base);
  context.layout = layout_name(base.format);
  context.device_name = report::cpu_description();
  std::unique_ptr<gpu::Nvml> nvml;
  if (device.is_cuda()) {
    std::string why_not;
    nvml = gpu::Nvml::open(why_not);
    if (nvml) {
      context.device_name = nvml->device_name(device.index);
      context.gpu_note = "sampled by NVML every 200 ms during each run";
    } else {
      context.device_name = "CUDA device " + std::to_string(device.index);
      context.gpu_note = "not sampled: " + why_not;
      std::cerr << "warning: " << why_not << "\n";
    }
  } else {
    context.gpu_note = "not sampled (CPU run)";
  }

  if (args.warmup_steps > 0) {
    TrainRunConfig warmup = base;
    warmup.batch_size = batch_sizes.front();
    warmup.steps = args.warmup_steps;
    warmup.epochs = epochs_for_steps(warmup.steps, warmup.batch_size, train_size);
    warmup.evaluate_test = false;
    warmup.evaluate_validation = false;
    std::printf("warm-up: %lld steps at batch %lld (discarded)\n",
                static_cast<long long>(args.warmup_steps),
                static_cast<long long>(warmup.batch_size));
    std::fflush(stdout);
    run_training(warmup);
  }

  std::vector<RunRecord> runs;
  const int64_t total = args.repeats * static_cast<int64_t>(batch_sizes.size());
  std::mt19937_64 order_gen(base.seed);
  for (int64_t repeat = 1; repeat <= args.repeats; ++repeat) {
    std::vector<int64_t> round = batch_sizes;
    if (args.shuffle) std::shuffle(round.begin(), round.end(), order_gen);
    for (int64_t batch : round) {
      if (!runs.empty() && args.cooldown_seconds > 0) {
        std::this_thread::sleep_for(std::chrono::duration<double>(args.cooldown_seconds));
      }
      TrainRunConfig config = base;
      config.batch_size = batch;
      config.seed = base.seed + static_cast<uint64_t>(repeat - 1);
      if (config.steps > 0) config.epochs = epochs_for_steps(config.steps, batch, train_size);
      RunRecord record;
      record.order = static_cast<int64_t>(runs.size()) + 1;
      record.batch_size = batch;
      record.repeat = repeat;
      record.seed = config.seed;
      record.started = utc_now();
      std::unique_ptr<gpu::GpuSampler> sampler;
      if (nvml) {
        sampler = std::make_unique<gpu::GpuSampler>(*nvml, device.index);
        sampler->start();
      }
      TrainRunResult result;
      try {
        result = run_training(config);
      } catch (const std::exception& e) {
        const std::string what = e.what();
        std::string hint;
        if (what.find("out of memory") != std::string::npos)
          hint = " (b3 maxbatch finds the largest batch that fits)";
        throw std::runtime_error("run " + std::to_string(record.order) + " (batch " +
                                 std::to_string(batch) + ", repeat " + std::to_string(repeat) +
                                 ") failed: " + what + hint);
      }
      if (sampler) record.gpu = gpu::summarize_samples(sampler->stop());
      record.steps = result.steps;
      record.images = result.train_images;
      record.train_seconds = result.train_seconds;
      record.images_per_second = result.images_per_second;
      if (!result.epochs.empty() && result.epochs.back().validation)
        record.validation_accuracy = result.epochs.back().validation->accuracy;
      if (result.test) {
        record.test_accuracy = result.test->accuracy;
        record.test_seconds = result.test->seconds;
        record.test_images = result.test->images;
      }
      if (context.data.empty()) {
        context.data = result.data_description;
        context.data_short = result.synthetic ? "synthetic images" : "real images";
        context.parameters = result.parameters;
      }
      std::printf("[%lld/%lld] batch %lld, repeat %lld/%lld: %lld steps, %.3f s, %.1f img/s",
                  static_cast<long long>(record.order), static_cast<long long>(total),
                  static_cast<long long>(batch), static_cast<long long>(repeat),
                  static_cast<long long>(args.repeats), static_cast<long long>(record.steps),
                  record.train_seconds, record.images_per_second);
      if (record.test_accuracy)
        std::printf(", test acc %.2f%% (%.2f s)", 100 * *record.test_accuracy,
                    *record.test_seconds);
      if (record.gpu && record.gpu->samples > 0)
        std::printf(", SM %.0f MHz, %.0f C", record.gpu->clock_mean_mhz,
                    record.gpu->temperature_max_c);
      std::printf("\n");
      std::fflush(stdout);
      runs.push_back(record);
    }
  }

  const std::vector<BatchSummary> rows = summarize_runs(runs, batch_sizes);
  const nlohmann::json json = results_json(args, base, context, batch_sizes, runs, rows);
  std::optional<CompareTable> comparison;
  if (!args.compare.empty()) comparison = compare_with(args.compare, json, rows);
  const plot::PlotFiles plot_files = make_plot(dir, args, base, context, rows);
  const std::string markdown = results_markdown(args, base, context, runs, rows, plot_files,
                                                comparison ? &*comparison : nullptr);
  report::write_text_atomically(dir / "results.json", json.dump(2) + "\n");
  report::write_text_atomically(dir / "results.csv", results_csv(rows));
  report::write_text_atomically(dir / "runs.csv", runs_csv(runs));
  report::write_text_atomically(dir / "results.md", markdown);

  std::printf("\n%s\n", markdown.substr(0, markdown.find("## How differences")).c_str());
  if (comparison) {
    std::printf("Beside %s:\n\n%s%s\n", args.compare.c_str(), comparison->markdown.c_str(),
                comparison->notes.c_str());
  }
  if (!plot_files.rendered) std::printf("plot: %s\n", plot_files.note.c_str());
  std::printf("wrote %s/results.md, results.csv, runs.csv, results.json%s\n", dir.string().c_str(),
              plot_files.rendered ? ", results.png" : "");
}

}  // namespace

void register_sweep_command(CLI::App& app) {
  auto args = std::make_shared<SweepArgs>();
  TrainRunConfig& c = args->base;
  CLI::App* cmd = app.add_subcommand(
      "sweep", "train each batch size several times, interleaved; statistics, tables and a plot");
  cmd->add_option("--batch-sizes", args->batch_sizes,
                  "batch sizes: a list (127,128,129) and/or ranges (120-136, 100-200:8)")
      ->check(CLI::Validator([](std::string& s) { return report::size_list_problem(s); }, "LIST",
                             "batch size list"))
      ->capture_default_str();
  cmd->add_option("--repeats", args->repeats, "runs per batch size (mean and std need >= 2)")
      ->check(CLI::Validator([](std::string& s) { return report::integer_at_least_problem(s, 1); },
                             "INT>=1", "at least 1"))
      ->capture_default_str();
  cmd->add_option("--cooldown", args->cooldown_seconds, "seconds to wait between runs")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--warmup-steps", args->warmup_steps,
                  "steps of a discarded run before the first one (0: none)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_flag("--shuffle", args->shuffle,
                "randomize the order of batch sizes within each round (seeded by --seed)");
  cmd->add_option("--device", c.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  const AmpOption amp(cmd);
  cmd->add_option("--data", c.data,
                  "CIFAR-10 binary dir, image folder, or 'synthetic' (default: look, download, "
                  "synthetic)");
  cmd->add_option("--model", c.model, "mobilenet_v3_large or mobilenet_v3_small")
      ->check(CLI::IsMember({"mobilenet_v3_large", "mobilenet_v3_small"}));
  CLI::Option* image_size =
      cmd->add_option("--image-size", c.image_size, "training image size (224; CPU: 32)")
          ->check(CLI::Range(int64_t{8}, int64_t{4096}));
  CLI::Option* epochs =
      cmd->add_option("--epochs", c.epochs, "epochs per run (10; CPU: 1)")
          ->check(
              CLI::Validator([](std::string& s) { return report::integer_at_least_problem(s, 1); },
                             "INT>=1", "at least 1"));
  CLI::Option* steps =
      cmd->add_option("--steps", c.steps, "optimizer steps per run instead of whole epochs")
          ->check(
              CLI::Validator([](std::string& s) { return report::integer_at_least_problem(s, 1); },
                             "INT>=1", "at least 1"));
  epochs->excludes(steps);
  CLI::Option* train_limit =
      cmd->add_option("--train-limit", c.train_limit,
                      "use the first N training images (0: all; CPU default 10000)")
          ->check(CLI::NonNegativeNumber);
  CLI::Option* validation_size =
      cmd->add_option("--validation-size", c.validation_size,
                      "images split off for validation (5000; CPU sweep: 1000)")
          ->check(CLI::NonNegativeNumber);
  CLI::Option* test_limit =
      cmd->add_option("--test-limit", c.test_limit,
                      "use the first N test images (0: all; CPU sweep default 1000)")
          ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--no-validation", args->no_validation, "skip the validation pass after epochs");
  cmd->add_flag("--no-test", args->no_test, "skip the final test-set evaluation (inference time)");
  cmd->add_option("--eval-batch-size", c.eval_batch_size, "batch size for validation and test")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--lr", c.lr, "Adam learning rate")->check(CLI::PositiveNumber);
  cmd->add_option("--seed", c.seed, "seed of repeat 1 (repeat r uses seed + r - 1)");
  cmd->add_option("--format", c.format, "memory format: nchw or nhwc")
      ->check(CLI::IsMember({"nchw", "nhwc"}));
  cmd->add_option("--workers", c.workers, "loader threads")->check(CLI::NonNegativeNumber);
  cmd->add_option("--out", args->out, "directory for results.md/.csv/.json and results.png")
      ->capture_default_str();
  cmd->add_option("--compare", args->compare,
                  "results.json of experiment/pytorch_b3.py (or another sweep): side by side");
  cmd->callback([=] {
    args->base.amp = amp.choice();
    run_sweep(*args, image_size->count() > 0, epochs->count() > 0, train_limit->count() > 0,
              validation_size->count() > 0, test_limit->count() > 0);
  });
}

}  // namespace b3::cli
