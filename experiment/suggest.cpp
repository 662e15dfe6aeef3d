// Coulom's batch-size rule and a sweep's measured results (see suggest.h).
#include "experiment/suggest.h"

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace b3::experiment {

std::vector<RuleValue> coulom_batch_sizes(int64_t sm_count, int64_t values_per_image,
                                          int64_t max_batch) {
  if (sm_count <= 0 || values_per_image <= 0 || max_batch <= 0) {
    throw std::invalid_argument(
        "coulom_batch_sizes: the SM count, the values per image and the largest batch must be "
        "positive, got " +
        std::to_string(sm_count) + ", " + std::to_string(values_per_image) + ", " +
        std::to_string(max_batch));
  }
  std::vector<RuleValue> values;
  for (int64_t n = 1; n <= 4096; ++n) {
    // Integer arithmetic: int() of a positive quotient is the floor.
    const int64_t batch = n * 16384 * sm_count / values_per_image;
    if (batch > max_batch) break;
    if (batch == 0) continue;
    values.push_back({n, batch});
  }
  return values;
}

int64_t nearest_rule_value(const std::vector<RuleValue>& values, int64_t batch) {
  int64_t nearest = 0;
  for (const RuleValue& v : values) {
    if (nearest == 0 || std::llabs(v.batch - batch) < std::llabs(nearest - batch))
      nearest = v.batch;
  }
  return nearest;
}

MeasuredSweep read_sweep_results(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("--results: cannot read " + path);
  nlohmann::json j;
  try {
    in >> j;
  } catch (const std::exception& e) {
    throw std::invalid_argument("--results: " + path + " is not JSON: " + e.what());
  }
  if (j.value("schema", std::string()) != "b3-sweep/1" || !j.contains("summary")) {
    throw std::invalid_argument("--results: " + path +
                                " is not a sweep result (b3 sweep's results.json)");
  }
  MeasuredSweep m;
  double best = -1.0;
  for (const nlohmann::json& row : j["summary"]) {
    const int64_t batch = row.value("batch_size", int64_t{0});
    const nlohmann::json& rate = row["images_per_second"]["mean"];
    if (!rate.is_number()) continue;
    m.images_per_second[batch] = rate.get<double>();
    if (rate.get<double>() > best) {
      best = rate.get<double>();
      m.best_batch = batch;
    }
  }
  const nlohmann::json& config = j["config"];
  m.image_size = config.value("image_size", int64_t{0});
  m.description = j.value("tool", std::string("?")) + " on " +
                  config.value("device_name", std::string("?")) + ", " +
                  config.value("dtype", std::string("?")) + ", " +
                  config.value("layout", std::string("?")) + ", image " +
                  std::to_string(config.value("image_size", int64_t{0})) + ", " +
                  std::to_string(config.value("repeats", int64_t{0})) + " runs per batch size";
  return m;
}

}  // namespace b3::experiment
