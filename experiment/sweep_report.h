// The files a sweep writes, from its config and result (experiment/sweep.h):
//
//   results.json  config, every run and the per-batch summary (schema
//                 "b3-sweep/1", which experiment/pytorch_b3.py writes too)
//   results.csv   one row per batch size;  runs.csv  one row per run
//   results.md    the tables, the significance rule, every run in order, the
//                 plot's caption, and the side-by-side with --compare
//   results.png   images/s against batch size with error bars (gnuplot;
//                 results.dat and results.gp beside it, experiment/plot.h)
//
// Each writer is a function of its inputs, so tests check them on hand-made
// runs; write_sweep_report() writes them all, each file atomically.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "experiment/plot.h"
#include "experiment/sweep.h"

namespace b3::experiment {

inline constexpr const char* kSweepSchema = "b3-sweep/1";

nlohmann::json sweep_json(const SweepConfig& config, const SweepResult& result);

// One row per batch size: mean and std of each measure, relative
// throughput, the p-value and verdict against the best.
std::string summary_csv(const std::vector<BatchSummary>& rows);
// One row per run, in the order run, with its GPU samples when there are any.
std::string runs_csv(const std::vector<RunRecord>& runs);

// The side-by-side with another results.json (normally pytorch_b3.py's).
struct CompareTable {
  std::string markdown;  // empty when no batch size matched
  std::string notes;     // settings that differ, or why nothing matched
};
// Throws std::invalid_argument naming --compare when `path` cannot be read
// or is not a sweep result.
CompareTable compare_with(const std::string& path, const nlohmann::json& ours,
                          const std::vector<BatchSummary>& rows);

// results.md; `comparison` may be null.
std::string sweep_markdown(const SweepConfig& config, const SweepResult& result,
                           const plot::PlotFiles& plot, const CompareTable* comparison);

// images/s against batch size: mean +- 1 std per kind of size (power of two,
// multiple of 8, other), dashed lines at the powers of two.
plot::Figure sweep_figure(const SweepConfig& config, const SweepResult& result);

struct SweepReport {
  nlohmann::json json;
  std::string markdown;
  plot::PlotFiles plot;
  std::optional<CompareTable> comparison;  // with a compare path
};

// Writes results.json, results.csv, runs.csv, results.md and the plot into
// `dir` (which must exist); `compare_path` may be empty.
SweepReport write_sweep_report(const std::filesystem::path& dir, const SweepConfig& config,
                               const SweepResult& result, const std::string& compare_path);

}  // namespace b3::experiment
