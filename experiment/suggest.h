// The batch sizes Remi Coulom's rule of thumb gives for a GPU and an image
// shape (`b3 suggest`),
//
//     batch(n) = int(n * 2^14 * SM / (H * W * C)),   n = 1, 2, 3, ...
//
// (2^14 values per SM per "wave": batches that fill every SM evenly), and
// what a sweep measured (its results.json, experiment/sweep_report.h), so the
// rule can be read against the measured best.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace b3::experiment {

struct RuleValue {
  int64_t n = 0;
  int64_t batch = 0;
};

// The rule's batch sizes in [1, max_batch], in order of n (n up to 4096;
// n whose batch rounds to 0 are left out). Throws std::invalid_argument for
// non-positive arguments.
std::vector<RuleValue> coulom_batch_sizes(int64_t sm_count, int64_t values_per_image,
                                          int64_t max_batch);

// The rule value nearest `batch` (the first of two at the same distance);
// 0 when there is none.
int64_t nearest_rule_value(const std::vector<RuleValue>& values, int64_t batch);

// What a sweep's results.json says.
struct MeasuredSweep {
  std::map<int64_t, double> images_per_second;  // batch -> mean
  int64_t best_batch = 0;                       // the highest mean
  int64_t image_size = 0;
  std::string description;  // tool, device, dtype, layout, image size, runs
};

// Throws std::invalid_argument naming --results when `path` cannot be read
// or is not a sweep result (schema "b3-sweep/1" with a summary).
MeasuredSweep read_sweep_results(const std::string& path);

}  // namespace b3::experiment
