// The sweep's statistics and files (experiment/sweep_summary.h,
// experiment/sweep_report.h) on a hand-made set of runs, so every number
// is known: per-batch summaries, the comparisons with the best and the next
// smaller batch size, results.csv / runs.csv columns and values, the JSON
// schema "b3-sweep/1", the Markdown tables, the plot's series, and the
// side-by-side with another tool's results.json.
#include <doctest/doctest.h>

#include <unistd.h>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "experiment/sweep_report.h"
#include "tests/support/files.h"

using namespace b3;
using namespace b3::experiment;

namespace {

using b3::test::lines_of;
using b3::test::read_text;
using b3::test::Scratch;
using b3::test::split_csv;

RunRecord run(int64_t order, int64_t batch, int64_t repeat, double seconds, double rate,
              std::optional<double> test_accuracy = std::nullopt) {
  RunRecord r;
  r.order = order;
  r.batch_size = batch;
  r.repeat = repeat;
  r.seed = static_cast<uint64_t>(repeat - 1);
  r.started = "2026-01-31T12:00:0" + std::to_string(order) + "Z";
  r.steps = 10;
  r.images = 10 * batch;
  r.train_seconds = seconds;
  r.images_per_second = rate;
  r.test_accuracy = test_accuracy;
  if (test_accuracy) {
    r.test_seconds = 0.5;
    r.test_images = 1000;
  }
  return r;
}

// Batch 8 is clearly the fastest; every size has a small spread.
SweepConfig hand_config() {
  SweepConfig config;
  config.base.device = "cpu";
  config.base.model = "mobilenet_v3_large";
  config.base.image_size = 32;
  config.base.steps = 10;
  config.base.lr = 5e-4;
  config.batch_sizes = {9, 7, 8};
  config.repeats = 2;
  config.warmup_steps = 0;
  return config;
}

SweepResult hand_result(const SweepConfig& config) {
  SweepResult result;
  result.context.device = "cpu";
  result.context.device_name = "test cpu";
  result.context.dtype = "f32";
  result.context.layout = "nhwc (channels_last)";
  result.context.data = "synthetic (test)";
  result.context.data_short = "synthetic images";
  result.context.gpu_note = "not sampled (CPU run)";
  result.context.parameters = 1234;
  result.runs = {run(1, 9, 1, 1.50, 60.0, 0.25),  run(2, 7, 1, 1.40, 50.0, 0.5),
                 run(3, 8, 1, 0.80, 104.0, 0.75), run(4, 9, 2, 1.48, 61.0, 0.25),
                 run(5, 7, 2, 1.35, 52.0, 0.5),   run(6, 8, 2, 0.72, 106.0, 0.25)};
  gpu::GpuSampleStats gpu;
  gpu.samples = 3;
  gpu.clock_mean_mhz = 1400;
  gpu.clock_min_mhz = 1300;
  gpu.temperature_max_c = 70;
  gpu.power_mean_w = 250;
  gpu.throttle_reasons_seen = 0x40;
  result.runs[5].gpu = gpu;
  result.runs[2].test_recalibrated_accuracy = 0.8;  // batch 8 recalibrated BatchNorm
  result.runs[5].test_recalibrated_accuracy = 0.6;
  result.summary = summarize_runs(result.runs, config.batch_sizes);
  return result;
}

}  // namespace

TEST_CASE("summarize_runs: per batch size, ascending, against the best and the next smaller") {
  const SweepConfig config = hand_config();
  const std::vector<BatchSummary> rows = hand_result(config).summary;
  REQUIRE(rows.size() == 3);
  CHECK(rows[0].batch_size == 7);
  CHECK(rows[1].batch_size == 8);
  CHECK(rows[2].batch_size == 9);
  const BatchSummary& b7 = rows[0];
  const BatchSummary& b8 = rows[1];
  CHECK(b7.images_per_second.count == 2);
  CHECK(b7.images_per_second.mean == doctest::Approx(51.0));
  CHECK(b7.images_per_second.std == doctest::Approx(std::sqrt(2.0)));  // |50 - 52| / sqrt(2)
  CHECK(b7.train_seconds.mean == doctest::Approx(1.375));
  CHECK(b7.test_accuracy.mean == doctest::Approx(50.0));  // percent
  CHECK(b7.inference_seconds.mean == doctest::Approx(0.5));
  CHECK(b7.validation_accuracy.count == 0);
  CHECK(b7.test_recalibrated_accuracy.count == 0);
  CHECK(b8.test_recalibrated_accuracy.count == 2);
  CHECK(b8.test_recalibrated_accuracy.mean == doctest::Approx(70.0));  // percent
  CHECK(b8.relative_throughput == 1.0);
  CHECK(b8.vs_best.verdict == "(best)");
  CHECK(b7.relative_throughput == doctest::Approx(51.0 / 105.0));
  CHECK(b7.vs_best.relative == doctest::Approx(51.0 / 105.0 - 1.0));
  CHECK(b7.vs_best.test.defined);
  CHECK(b7.vs_best.significant);  // 51 +- 1.4 vs 105 +- 1.4: far beyond the spread
  CHECK(b7.vs_best.verdict.rfind("yes (p=", 0) == 0);
  CHECK_FALSE(b7.vs_previous);
  REQUIRE(b8.vs_previous);
  CHECK(b8.previous_batch == 7);
  CHECK(b8.vs_previous->relative == doctest::Approx(105.0 / 51.0 - 1.0));
  CHECK(rows[2].previous_batch == 8);
  CHECK(best_batch_size(rows) == 8);

  // One run per size: no spread, so no verdict beyond "n/a".
  const std::vector<BatchSummary> single =
      summarize_runs({run(1, 4, 1, 1.0, 10.0), run(2, 5, 1, 1.0, 20.0)}, {4, 5});
  CHECK(single[0].images_per_second.count == 1);
  CHECK(std::isnan(single[0].images_per_second.std));
  CHECK(single[0].vs_best.verdict.rfind("n/a", 0) == 0);
  CHECK_FALSE(single[0].vs_best.significant);
  CHECK(best_batch_size(single) == 5);
  CHECK(summarize_runs({}, {}).empty());
}

TEST_CASE("summary_csv and runs_csv: their columns and values") {
  const SweepConfig config = hand_config();
  const SweepResult result = hand_result(config);
  const std::vector<std::string> csv = lines_of(summary_csv(result.summary));
  REQUIRE(csv.size() == 4);
  CHECK(csv[0] ==
        "batch_size,category,runs,train_seconds_mean,train_seconds_std,images_per_second_mean,"
        "images_per_second_std,relative_throughput,p_vs_best,significant_vs_best,"
        "inference_seconds_mean,inference_seconds_std,test_accuracy_mean,test_accuracy_std,"
        "validation_accuracy_mean,validation_accuracy_std,test_accuracy_recalibrated_mean,"
        "test_accuracy_recalibrated_std");
  const std::vector<std::string> header = split_csv(csv[0]);
  const std::vector<std::string> b8 = split_csv(csv[2]);
  REQUIRE(b8.size() == header.size());
  CHECK(b8[0] == "8");
  CHECK(b8[1] == "power of two");
  CHECK(b8[2] == "2");
  CHECK(b8[3] == "0.76");  // train seconds mean
  CHECK(b8[5] == "105");   // images/s mean
  CHECK(b8[7] == "1");     // relative throughput
  CHECK(b8[9] == "no");    // the best is not beyond its own spread
  CHECK(b8[12] == "50");   // test accuracy mean, percent
  CHECK(b8[14].empty());   // no validation: an empty cell, not "nan"
  CHECK(b8[16] == "70");   // test accuracy after BatchNorm recalibration, percent
  const std::vector<std::string> b7 = split_csv(csv[1]);
  CHECK(b7[1] == "other");
  CHECK(b7[9] == "yes");

  const std::vector<std::string> runs = lines_of(runs_csv(result.runs));
  REQUIRE(runs.size() == 7);
  CHECK(runs[0] ==
        "order,batch_size,repeat,seed,started,steps,images,train_seconds,images_per_second,"
        "validation_accuracy,test_accuracy,test_seconds,gpu_samples,sm_clock_mean_mhz,"
        "sm_clock_min_mhz,temperature_max_c,power_mean_w,throttle_reasons,"
        "test_accuracy_recalibrated");
  CHECK(runs[1] == "1,9,1,0,2026-01-31T12:00:01Z,10,90,1.500000,60.0000,,0.25,0.5,,,,,,,");
  CHECK(runs[6] ==
        "6,8,2,1,2026-01-31T12:00:06Z,10,80,0.720000,106.0000,,0.25,0.5,3,1400,1300,70,250.0,"
        "\"thermal (hw)\",0.6");
}

TEST_CASE("sweep_json: schema b3-sweep/1 with config, runs and summary") {
  SweepConfig config = hand_config();
  const SweepResult result = hand_result(config);
  nlohmann::json json = sweep_json(config, result);
  CHECK(json["schema"] == "b3-sweep/1");
  CHECK(json["tool"] == "b3");
  CHECK(json["best_batch_size"] == 8);
  CHECK(json["significance_rule"].get<std::string>().find("Welch") != std::string::npos);
  const nlohmann::json& c = json["config"];
  CHECK(c["device"] == "cpu");
  CHECK(c["device_name"] == "test cpu");
  CHECK(c["dtype"] == "f32");
  CHECK(c["layout"] == "nhwc");
  CHECK(c["parameters"] == 1234);
  CHECK(c["epochs"].is_null());  // --steps: no whole epochs
  CHECK(c["steps"] == 10);
  CHECK(c["batch_sizes"] == nlohmann::json({9, 7, 8}));  // as given
  CHECK(c["repeats"] == 2);
  CHECK(c["order"] == "round-robin");
  CHECK(c["test"] == true);
  REQUIRE(json["runs"].size() == 6);
  CHECK(json["runs"][0]["batch_size"] == 9);
  CHECK(json["runs"][0]["images_per_second"] == 60.0);
  CHECK(json["runs"][0]["validation_accuracy"].is_null());
  CHECK(json["runs"][0]["gpu"].is_null());
  CHECK(json["runs"][5]["gpu"]["samples"] == 3);
  CHECK(json["runs"][5]["gpu"]["throttle_reasons"] == "thermal (hw)");
  REQUIRE(json["summary"].size() == 3);
  const nlohmann::json& first = json["summary"][0];
  CHECK(first["batch_size"] == 7);
  CHECK(first["category"] == "other");
  CHECK(first["runs"] == 2);
  CHECK(first["images_per_second"]["mean"].get<double>() == doctest::Approx(51.0));
  CHECK(first["images_per_second"]["min"] == 50.0);
  CHECK(first["validation_accuracy_percent"]["mean"].is_null());  // NaN is written as null
  CHECK(first["vs_best"]["significant"] == true);
  CHECK(first["vs_previous"].is_null());
  CHECK(first["previous_batch_size"].is_null());
  CHECK(json["summary"][1]["previous_batch_size"] == 7);
  CHECK(json["summary"][1]["vs_best"]["verdict"] == "(best)");

  config.shuffle = true;
  config.base.steps = 0;
  config.base.epochs = 3;
  json = sweep_json(config, result);
  CHECK(json["config"]["order"] == "round-robin, shuffled within each round");
  CHECK(json["config"]["epochs"] == 3);
}

TEST_CASE("sweep_markdown: what was run, the per-batch table and every run") {
  SweepConfig config = hand_config();
  const SweepResult result = hand_result(config);
  plot::PlotFiles plot;
  plot.note = "gnuplot is not installed (test)";
  const std::string md = sweep_markdown(config, result, plot, nullptr);
  for (const char* text :
       {"# b3 sweep: batch size vs training speed", "- device: cpu (test cpu)",
        "- dtype: f32; layout: nhwc (channels_last); model: mobilenet_v3_large (1234 parameters)",
        "- length: 10 optimizer steps per run", "- runs: 2 per batch size, 6 in all",
        "## Per batch size: mean ± sample std over 2 runs",
        "| 7 | other | 2 | 1.375 ± 0.035 | 51.0 ± 1.4 | 0.486 | yes (p=",
        "| 8 | power of two | 2 | 0.760 ± 0.057 | 105.0 ± 1.4 | 1.000 | (best) | ",
        "Best: batch 8 at 105.0 images/s (mean)", "## How differences are judged",
        "## Every run, in the order run", "| 1 | 9 | 1 | 0 | 2026-01-31T12:00:01Z | 10 | 90 |",
        "| 1400 (1300) | 70 | 250 | thermal (hw) |",
        "Not rendered: gnuplot is not installed (test)"}) {
    CAPTURE(text);
    CHECK(md.find(text) != std::string::npos);
  }
  CHECK(md.find("vs 7 |") != std::string::npos);  // 8 against the next smaller
  CHECK(md.find("## Beside the other tool") == std::string::npos);

  CompareTable table;
  table.markdown = "| batch | b3 images/s | other images/s |\n";
  table.notes = "  differs: lr\n";
  plot.rendered = true;
  config.test = false;
  const std::string with = sweep_markdown(config, result, plot, &table);
  CHECK(with.find("## Beside the other tool (--compare)") != std::string::npos);
  CHECK(with.find("Notes:\n\n```\n  differs: lr\n```") != std::string::npos);
  CHECK(with.find("![images/s against batch size](results.png)") != std::string::npos);
  CHECK(with.find("(skipped: --no-test)") != std::string::npos);
}

TEST_CASE("compare_with reads another tool's results.json and lines up the batch sizes") {
  Scratch scratch("b3-sweep-report");
  const SweepConfig config = hand_config();
  const SweepResult result = hand_result(config);
  const nlohmann::json ours = sweep_json(config, result);
  nlohmann::json theirs = ours;
  theirs["tool"] = "pytorch";
  theirs["config"]["lr"] = 1e-3;
  theirs["summary"] =
      nlohmann::json::array({{{"batch_size", 8},
                              {"images_per_second", {{"count", 2}, {"mean", 52.5}, {"std", 1.0}}},
                              {"train_seconds", {{"count", 2}, {"mean", 1.52}, {"std", 0.01}}}},
                             {{"batch_size", 64}, {"images_per_second", {{"mean", 1.0}}}}});
  const std::string path = (scratch.path / "theirs.json").string();
  std::ofstream(path) << theirs.dump();
  const CompareTable table = compare_with(path, ours, result.summary);
  CHECK(table.markdown.find("| batch | b3 images/s | pytorch images/s | b3 / pytorch |") !=
        std::string::npos);
  CHECK(table.markdown.find("| 8 | 105.0 ± 1.4 | 52.5 ± 1.0 | 2.000 | 0.760 ± 0.057 | 1.520 ± "
                            "0.010 | 0.500 | yes") != std::string::npos);
  CHECK(table.markdown.find("| 7 |") == std::string::npos);  // not in theirs
  CHECK(table.notes.find("differs: lr = 0.0005 (b3) vs 0.001 (pytorch)") != std::string::npos);

  theirs["summary"] = nlohmann::json::array({{{"batch_size", 64}}});
  std::ofstream(path) << theirs.dump();
  const CompareTable none = compare_with(path, ours, result.summary);
  CHECK(none.markdown.empty());
  CHECK(none.notes.find("no batch size of this sweep is in") != std::string::npos);

  std::ofstream(path) << R"({"schema": "other/2", "summary": []})";
  CHECK_THROWS_WITH_AS(compare_with(path, ours, result.summary),
                       doctest::Contains("is not a sweep result"), std::invalid_argument);
  std::ofstream(path) << "{not json";
  CHECK_THROWS_WITH_AS(compare_with(path, ours, result.summary), doctest::Contains("not JSON"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(compare_with((scratch.path / "missing.json").string(), ours, result.summary),
                       doctest::Contains("--compare: cannot read"), std::invalid_argument);
}

TEST_CASE("sweep_figure: a series per kind of batch size, dashed lines at powers of two") {
  const SweepConfig config = hand_config();
  const plot::Figure figure = sweep_figure(config, hand_result(config));
  CHECK(figure.title.find("mobilenet_v3_large") != std::string::npos);
  CHECK(figure.title.find("cpu (test cpu), f32, nhwc (channels_last)") != std::string::npos);
  CHECK(figure.subtitle.find("over 2 runs per batch size") != std::string::npos);
  CHECK(figure.subtitle.find("10 steps per run") != std::string::npos);
  // All sizes, then power of two and other (no other multiple of 8: no series).
  REQUIRE(figure.series.size() == 3);
  CHECK(figure.series[0].x == std::vector<double>{7, 8, 9});
  CHECK(figure.series[0].error.empty());
  CHECK(figure.series[1].title == "power of two");
  CHECK(figure.series[1].x == std::vector<double>{8});
  CHECK(figure.series[1].y == std::vector<double>{105.0});
  CHECK(figure.series[1].error[0] == doctest::Approx(std::sqrt(2.0)));
  CHECK(figure.series[2].title == "other");
  CHECK(figure.series[2].x == std::vector<double>{7, 9});
  CHECK(figure.x_marks == std::vector<double>{8});
  CHECK_FALSE(figure.log_x);
}

TEST_CASE("write_sweep_report writes every file, atomically, and returns what it wrote") {
  Scratch scratch("b3-sweep-report");
  const SweepConfig config = hand_config();
  const SweepResult result = hand_result(config);
  const SweepReport written = write_sweep_report(scratch.path, config, result, "");
  CHECK_FALSE(written.comparison);
  CHECK(nlohmann::json::parse(read_text(scratch.path / "results.json"))["summary"] ==
        written.json["summary"]);
  CHECK(read_text(scratch.path / "results.md") == written.markdown);
  CHECK(read_text(scratch.path / "results.csv") == summary_csv(result.summary));
  CHECK(read_text(scratch.path / "runs.csv") == runs_csv(result.runs));
  CHECK(std::filesystem::exists(scratch.path / "results.dat"));
  CHECK(std::filesystem::exists(scratch.path / "results.gp"));
  for (const auto& entry : std::filesystem::directory_iterator(scratch.path))
    CHECK(entry.path().extension() != ".tmp");
}
