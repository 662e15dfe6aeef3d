// Per-batch statistics of a sweep's runs (see sweep_summary.h).
#include "experiment/sweep_summary.h"

#include <algorithm>
#include <functional>

#include "experiment/sweep.h"

namespace b3::experiment {

namespace {

using report::SampleSummary;

// The summary of one field over the runs of one batch size (runs without the
// field, e.g. no test, are left out).
SampleSummary summary_of(const std::vector<RunRecord>& runs, int64_t batch,
                         const std::function<std::optional<double>(const RunRecord&)>& field) {
  std::vector<double> values;
  for (const RunRecord& r : runs) {
    if (r.batch_size != batch) continue;
    if (const std::optional<double> v = field(r)) values.push_back(*v);
  }
  return report::summarize(values);
}

std::optional<double> percent(const std::optional<double>& fraction) {
  return fraction ? std::optional<double>(100.0 * *fraction) : std::nullopt;
}

BatchSummary summarize_batch(const std::vector<RunRecord>& runs, int64_t batch) {
  BatchSummary s;
  s.batch_size = batch;
  s.train_seconds = summary_of(runs, batch, [](const RunRecord& r) { return r.train_seconds; });
  s.images_per_second =
      summary_of(runs, batch, [](const RunRecord& r) { return r.images_per_second; });
  s.inference_seconds = summary_of(runs, batch, [](const RunRecord& r) { return r.test_seconds; });
  s.test_accuracy =
      summary_of(runs, batch, [](const RunRecord& r) { return percent(r.test_accuracy); });
  s.test_recalibrated_accuracy = summary_of(
      runs, batch, [](const RunRecord& r) { return percent(r.test_recalibrated_accuracy); });
  s.validation_accuracy =
      summary_of(runs, batch, [](const RunRecord& r) { return percent(r.validation_accuracy); });
  return s;
}

}  // namespace

std::vector<BatchSummary> summarize_runs(const std::vector<RunRecord>& runs,
                                         std::vector<int64_t> batch_sizes) {
  std::sort(batch_sizes.begin(), batch_sizes.end());
  std::vector<BatchSummary> rows;
  for (int64_t b : batch_sizes) rows.push_back(summarize_batch(runs, b));
  if (rows.empty()) return rows;
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

int64_t best_batch_size(const std::vector<BatchSummary>& rows) {
  int64_t best = 0;
  for (const BatchSummary& s : rows)
    if (s.relative_throughput == 1.0) best = s.batch_size;
  return best;
}

}  // namespace b3::experiment
