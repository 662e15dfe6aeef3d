// The statistics of a sweep, per batch size: mean and sample standard
// deviation of train time, images/s, inference time and accuracies over the
// repeats, throughput relative to the best batch size, and whether each
// difference is larger than the run-to-run spread (Welch's t-test, the rule
// in experiment/report.h), against the best and against the next smaller
// batch size.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "experiment/report.h"

namespace b3::experiment {

struct RunRecord;  // experiment/sweep.h

struct BatchSummary {
  int64_t batch_size = 0;
  report::SampleSummary train_seconds, images_per_second, inference_seconds;
  report::SampleSummary test_accuracy, validation_accuracy;  // percent
  report::SampleSummary test_recalibrated_accuracy;          // percent, after BN recalibration
  double relative_throughput = report::kNaN;                 // mean images/s / best mean images/s
  report::Comparison vs_best;                                // images/s against the best batch size
  std::optional<report::Comparison> vs_previous;             // against the next smaller batch size
  int64_t previous_batch = 0;                                // that batch size (0: none)
};

// One row per batch size in `batch_sizes`, ascending, from the runs of that
// size; the best (highest mean images/s) has vs_best.verdict "(best)".
std::vector<BatchSummary> summarize_runs(const std::vector<RunRecord>& runs,
                                         std::vector<int64_t> batch_sizes);

// The best row's batch size (relative throughput 1), 0 for none.
int64_t best_batch_size(const std::vector<BatchSummary>& rows);

}  // namespace b3::experiment
