// Coulom's batch-size rule and the reading of a sweep's results.json
// (experiment/suggest.h): the rule's values by hand, the nearest one, and
// clear errors for files that are not sweep results.
#include <doctest/doctest.h>

#include <unistd.h>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "experiment/suggest.h"

using namespace b3::experiment;

TEST_CASE("coulom_batch_sizes: int(n * 2^14 * SM / (H * W * C)) up to the largest batch") {
  // 224 x 224 x 3 = 150528 values; 80 SMs: 8.7, 17.4, 26.1, 34.8, 43.5 -> 8, 17, 26, 34 (43 > 40).
  const std::vector<RuleValue> values = coulom_batch_sizes(80, 150528, 40);
  REQUIRE(values.size() == 4);
  const int64_t expected[] = {8, 17, 26, 34};
  for (size_t i = 0; i < 4; ++i) {
    CAPTURE(i);
    CHECK(values[i].n == static_cast<int64_t>(i) + 1);
    CHECK(values[i].batch == expected[i]);
  }
  // One SM and a large image: the first n give batch 0 and are left out.
  const std::vector<RuleValue> small = coulom_batch_sizes(1, 3 * 16384, 2);
  REQUIRE(small.size() == 6);  // n = 3, 4, 5 give 1; n = 6, 7, 8 give 2; n = 9 gives 3
  CHECK(small.front().n == 3);
  CHECK(small.back().n == 8);
  CHECK(small.back().batch == 2);
  CHECK(coulom_batch_sizes(1, 1 << 30, 1000).empty());
  CHECK_THROWS_AS(coulom_batch_sizes(0, 10, 10), std::invalid_argument);

  CHECK(nearest_rule_value(values, 26) == 26);
  CHECK(nearest_rule_value(values, 30) == 26);  // 26 and 34 are 4 away: the first
  CHECK(nearest_rule_value(values, 100) == 34);
  CHECK(nearest_rule_value({}, 100) == 0);
}

TEST_CASE("read_sweep_results: the measured means, the best, and clear errors") {
  const std::filesystem::path dir = std::filesystem::temp_directory_path();
  const std::string path = (dir / ("b3-suggest-" + std::to_string(getpid()) + ".json")).string();
  std::ofstream(path) << R"({"schema": "b3-sweep/1", "tool": "b3",
    "config": {"device_name": "test", "dtype": "f32", "layout": "nhwc", "image_size": 32,
               "repeats": 2},
    "summary": [{"batch_size": 17, "images_per_second": {"mean": 90.0}},
                {"batch_size": 26, "images_per_second": {"mean": 110.0}},
                {"batch_size": 30, "images_per_second": {"mean": null}}]})";
  const MeasuredSweep m = read_sweep_results(path);
  CHECK(m.images_per_second.size() == 2);  // a null mean is left out
  CHECK(m.images_per_second.at(17) == 90.0);
  CHECK(m.best_batch == 26);
  CHECK(m.image_size == 32);
  CHECK(m.description == "b3 on test, f32, nhwc, image 32, 2 runs per batch size");

  std::ofstream(path) << R"({"schema": "other"})";
  CHECK_THROWS_WITH_AS(read_sweep_results(path), doctest::Contains("is not a sweep result"),
                       std::invalid_argument);
  std::ofstream(path) << "[";
  CHECK_THROWS_WITH_AS(read_sweep_results(path), doctest::Contains("is not JSON"),
                       std::invalid_argument);
  std::filesystem::remove(path);
  CHECK_THROWS_WITH_AS(read_sweep_results(path), doctest::Contains("--results: cannot read"),
                       std::invalid_argument);
}
