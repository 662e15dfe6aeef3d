// The sweep's steps as a library (experiment/sweep.h), without the binary:
// the interleaved run order (round-robin; --shuffle seeded, a permutation per
// round), the CPU's smaller defaults and their notice, the checks before any
// run, and a tiny run_sweep() whose observer sees every run in order.
#include <doctest/doctest.h>

#include <algorithm>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "experiment/sweep.h"

using namespace b3;
using namespace b3::experiment;

namespace {

std::vector<int64_t> batches_of(const std::vector<PlannedRun>& runs) {
  std::vector<int64_t> batches;
  for (const PlannedRun& r : runs) batches.push_back(r.batch_size);
  return batches;
}

// A CPU sweep on synthetic data small enough to plan (and run) in a test.
SweepConfig tiny_config() {
  SweepConfig config;
  config.base.device = "cpu";
  config.base.data = "synthetic";
  config.base.model = "mobilenet_v3_small";
  config.base.image_size = 8;
  config.base.validation_size = 1000;
  config.base.train_limit = 100;
  config.base.steps = 1;
  config.base.workers = 0;
  config.batch_sizes = {3, 2};
  config.repeats = 2;
  config.warmup_steps = 0;
  config.test = false;
  config.validation = false;
  return config;
}

}  // namespace

TEST_CASE("sweep order: round-robin, repeat r of every size before repeat r + 1 of any") {
  const std::vector<PlannedRun> runs = interleaved_runs({7, 8, 9}, 2, false, 10);
  REQUIRE(runs.size() == 6);
  CHECK(batches_of(runs) == std::vector<int64_t>{7, 8, 9, 7, 8, 9});
  for (size_t i = 0; i < runs.size(); ++i) {
    CAPTURE(i);
    CHECK(runs[i].order == static_cast<int64_t>(i) + 1);
    CHECK(runs[i].repeat == (i < 3 ? 1 : 2));
    CHECK(runs[i].seed == (i < 3 ? 10u : 11u));  // repeat r uses seed + r - 1
  }
  CHECK(interleaved_runs({5}, 3, false, 0).size() == 3);
  CHECK(interleaved_runs({5, 6}, 0, false, 0).empty());
}

TEST_CASE("sweep order: --shuffle permutes each round, seeded, and keeps the repeats apart") {
  const std::vector<int64_t> sizes = {100, 127, 128, 129, 156, 511, 512, 513};
  bool any_round_reordered = false, rounds_differ = false, seeds_differ = false;
  for (uint64_t seed = 0; seed < 8; ++seed) {
    CAPTURE(seed);
    const std::vector<PlannedRun> runs = interleaved_runs(sizes, 3, true, seed);
    REQUIRE(runs.size() == 24);
    // The same seed gives the same order.
    CHECK(batches_of(runs) == batches_of(interleaved_runs(sizes, 3, true, seed)));
    std::vector<std::vector<int64_t>> rounds(3);
    for (const PlannedRun& r : runs) {
      CHECK(r.repeat == static_cast<int64_t>(&r - runs.data()) / 8 + 1);
      CHECK(r.seed == seed + static_cast<uint64_t>(r.repeat - 1));
      rounds[static_cast<size_t>(r.repeat - 1)].push_back(r.batch_size);
    }
    for (std::vector<int64_t> round : rounds) {
      if (round != sizes) any_round_reordered = true;
      std::sort(round.begin(), round.end());
      CHECK(round == sizes);  // every size exactly once per round
    }
    if (rounds[0] != rounds[1] || rounds[1] != rounds[2]) rounds_differ = true;
    if (batches_of(runs) != batches_of(interleaved_runs(sizes, 3, true, seed + 100)))
      seeds_differ = true;
  }
  CHECK(any_round_reordered);
  CHECK(rounds_differ);  // the generator runs on across rounds
  CHECK(seeds_differ);
}

TEST_CASE("make_cpu_sized_sweep scales the CPU's defaults down and says so") {
  SweepConfig config;
  config.base.device = "cpu";
  const std::string notice = make_cpu_sized_sweep(config, {});
  CHECK(config.base.image_size == 32);
  CHECK(config.base.epochs == 1);
  CHECK(config.base.train_limit == 10000);
  CHECK(config.base.validation_size == 1000);
  CHECK(config.base.test_limit == 1000);
  CHECK(notice.find("CPU run: defaults scaled down to 32x32 images") == 0);
  CHECK(notice.find("; a 1,000-image validation split, the first 1,000 test images") !=
        std::string::npos);

  // What the user gave stays; with all of it given, nothing changes.
  SweepConfig given_all;
  given_all.base.device = "cpu";
  given_all.base.image_size = 64;
  given_all.base.validation_size = 7;
  SweepOptionsGiven given;
  given.image_size = given.epochs = given.train_limit = true;
  given.validation_size = given.test_limit = true;
  CHECK(make_cpu_sized_sweep(given_all, given).empty());
  CHECK(given_all.base.image_size == 64);
  CHECK(given_all.base.validation_size == 7);

  // Only the sweep's own two: the notice starts with them.
  SweepConfig sweep_only;
  sweep_only.base.device = "cpu";
  given.validation_size = false;
  CHECK(make_cpu_sized_sweep(sweep_only, given) ==
        "CPU sweep: defaults scaled down to a 1,000-image validation split (set "
        "--validation-size, --test-limit)");

  // --steps is a length: the epochs stay.
  SweepConfig steps;
  steps.base.device = "cpu";
  steps.base.steps = 5;
  steps.base.epochs = 10;
  make_cpu_sized_sweep(steps, {});
  CHECK(steps.base.epochs == 10);

  SweepConfig gpu;
  gpu.base.device = "cuda";
  CHECK(make_cpu_sized_sweep(gpu, {}).empty());
  CHECK(gpu.base.image_size == 224);
}

TEST_CASE("sweep checks: settings first, then every batch size against the training set") {
  SweepConfig config = tiny_config();
  config.repeats = 0;
  CHECK_THROWS_WITH_AS(check_sweep_settings(config), "--repeats must be at least 1, got 0",
                       std::invalid_argument);
  config = tiny_config();
  config.base.device = "tpu";
  CHECK_THROWS_WITH_AS(check_sweep_settings(config), doctest::Contains("--device must be cpu"),
                       std::invalid_argument);
  config = tiny_config();
  config.batch_sizes.clear();
  CHECK_THROWS_AS(check_sweep_settings(config), std::invalid_argument);

  config = tiny_config();
  config.batch_sizes = {8, 101};
  CHECK_THROWS_WITH_AS(
      plan_sweep(config),
      doctest::Contains("batch size 101 cannot fit: this run has only 100 training images (after "
                        "the 1000-image validation split and --train-limit 100)"),
      std::invalid_argument);

  config = tiny_config();
  config.validation = true;
  const SweepPlan plan = plan_sweep(config);
  CHECK(plan.train_size == 100);
  CHECK(batches_of(plan.runs) == std::vector<int64_t>{3, 2, 3, 2});  // the order given
  CHECK_FALSE(plan.config.base.progress);
  CHECK_FALSE(plan.config.base.evaluate_test);
  CHECK(plan.config.base.evaluate_validation);
  CHECK_FALSE(plan.config.base.evaluate_test_batch_statistics);
}

TEST_CASE("run_sweep runs the plan in order and summarizes each batch size") {
  const SweepPlan plan = plan_sweep(tiny_config());
  std::vector<int64_t> seen;
  int64_t total_seen = 0;
  SweepObserver observer;
  observer.on_run = [&](const RunRecord& r, int64_t total) {
    seen.push_back(r.batch_size);
    total_seen = total;
  };
  observer.on_warmup = [](int64_t, int64_t) { FAIL("no warm-up was asked for"); };
  const SweepResult result = run_sweep(plan, observer);
  CHECK(seen == std::vector<int64_t>{3, 2, 3, 2});
  CHECK(total_seen == 4);
  REQUIRE(result.runs.size() == 4);
  for (const RunRecord& r : result.runs) {
    CAPTURE(r.order);
    CHECK(r.steps == 1);
    CHECK(r.images == r.batch_size);
    CHECK(r.train_seconds > 0);
    CHECK(r.images_per_second == doctest::Approx(static_cast<double>(r.images) / r.train_seconds));
    CHECK_FALSE(r.test_accuracy);
    CHECK_FALSE(r.gpu);
    CHECK(r.started.size() == 20);  // 2026-01-31T12:00:00Z
  }
  CHECK(result.runs[2].seed == 1);
  CHECK(result.context.device == "cpu");
  CHECK(result.context.dtype == "f32");
  CHECK(result.context.layout == "nhwc (channels_last)");
  CHECK(result.context.gpu_note == "not sampled (CPU run)");
  CHECK(result.context.data_short == "synthetic images");
  CHECK(result.context.parameters > 0);
  REQUIRE(result.summary.size() == 2);
  CHECK(result.summary[0].batch_size == 2);  // ascending
  CHECK(result.summary[1].batch_size == 3);
  CHECK(result.summary[0].images_per_second.count == 2);
  CHECK(result.summary[0].inference_seconds.count == 0);
}
