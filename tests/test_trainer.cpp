// The training loop learns: MobileNetV3-Small and -Large overfit 8 fixed
// images; evaluation restores modes and buffers; train accuracy either way.
#include <doctest/doctest.h>

#include <cmath>

#include "models/mobilenet_v3.h"
#include "optim/adam.h"
#include "optim/sgd.h"
#include "tests/support/reference.h"
#include "train/graphed_step.h"
#include "train/trainer.h"

using namespace b3;

namespace {

LabeledBatch eight_images(uint64_t seed) {
  Generator gen(seed);
  LabeledBatch batch;
  batch.images = rand({8, 3, 32, 32}, gen);
  batch.labels = from_doubles({0, 1, 2, 3, 4, 5, 6, 7}, {8}, DType::i64);
  return batch;
}

// Trains on one fixed batch until the loss is below `target`; returns the steps taken.
int64_t steps_to_overfit(MobileNetV3Arch arch, double target, int64_t max_steps) {
  MobileNetV3Options options;
  options.arch = arch;
  options.num_classes = 10;
  options.seed = 1;
  MobileNetV3 model(options);
  AdamOptions adam;
  adam.lr = 1e-3;
  Adam optimizer(model.parameters(), adam);
  const LabeledBatch batch = eight_images(2);
  for (int64_t step = 1; step <= max_steps; ++step) {
    const StepResult result = train_step(model, optimizer, batch);
    REQUIRE(std::isfinite(result.loss));
    if (result.loss < target) return step;
  }
  return max_steps + 1;
}

}  // namespace

TEST_CASE("trainer: MobileNetV3-Small overfits 8 images to loss < 0.05 within 300 steps") {
  const int64_t steps = steps_to_overfit(MobileNetV3Arch::small, 0.05, 300);
  MESSAGE("MobileNetV3-Small reached loss < 0.05 after " << steps << " steps");
  CHECK(steps <= 300);
}

TEST_CASE("trainer: MobileNetV3-Large overfits 8 images to loss < 0.05 within 300 steps") {
  const int64_t steps = steps_to_overfit(MobileNetV3Arch::large, 0.05, 300);
  MESSAGE("MobileNetV3-Large reached loss < 0.05 after " << steps << " steps");
  CHECK(steps <= 300);
}

TEST_CASE("trainer: train() runs epochs, honours max_steps, validates, reports") {
  MobileNetV3Options options;
  options.arch = MobileNetV3Arch::small;
  options.num_classes = 10;
  MobileNetV3 model(options);
  SgdOptions sgd;
  sgd.lr = 0.01;
  sgd.momentum = 0.9;
  Sgd optimizer(model.parameters(), sgd);
  FixedBatches data({eight_images(3), eight_images(4), eight_images(5)});
  FixedBatches validation({eight_images(6)});
  TrainOptions train_options;
  train_options.epochs = 3;
  train_options.max_steps = 7;
  int64_t callbacks = 0;
  train_options.on_step = [&](const StepReport& r) {
    ++callbacks;
    CHECK(r.global_step == callbacks);
    CHECK(r.steps_per_epoch == 3);
  };
  const auto reports = train(model, optimizer, data, &validation, train_options);
  CHECK(callbacks == 7);
  REQUIRE(reports.size() == 3);
  CHECK(reports[0].steps == 3);
  CHECK(reports[2].steps == 1);
  for (const auto& r : reports) {
    REQUIRE(r.validation.has_value());
    CHECK(r.validation->images == 8);
    CHECK(std::isfinite(r.train_loss));
    CHECK(r.train_accuracy >= 0.0);
    CHECK(r.train_accuracy <= 1.0);
  }
  CHECK(model.is_training());
}

TEST_CASE("trainer: evaluate leaves modes and buffers as they were") {
  MobileNetV3Options options;
  options.arch = MobileNetV3Arch::small;
  options.num_classes = 10;
  MobileNetV3 model(options);
  FixedBatches data({eight_images(7)});
  const auto before = model.named_buffers();
  std::vector<std::vector<double>> values;
  for (const auto& [name, t] : before) values.push_back(t.to_doubles());
  const EvalResult running = evaluate(model, data, BatchNormMode::running_statistics);
  const EvalResult batch_stats = evaluate(model, data, BatchNormMode::batch_statistics);
  CHECK(running.images == 8);
  CHECK(batch_stats.images == 8);
  CHECK(running.loss != batch_stats.loss);  // the two modes differ
  CHECK(model.is_training());
  const auto after = model.named_buffers();
  for (size_t i = 0; i < after.size(); ++i) CHECK(after[i].second.to_doubles() == values[i]);
}

TEST_CASE("trainer: train accuracy from an extra eval-mode forward") {
  MobileNetV3Options options;
  options.arch = MobileNetV3Arch::small;
  options.num_classes = 10;
  options.dropout = 0.0;
  MobileNetV3 model(options);
  Adam optimizer(model.parameters(), AdamOptions{});
  const StepResult r =
      train_step(model, optimizer, eight_images(8), TrainAccuracy::from_eval_forward);
  CHECK(r.images == 8);
  CHECK(r.correct >= 0);
  CHECK(r.correct <= 8);
  CHECK(model.is_training());
}

TEST_CASE("count_correct: arg-max against labels, mismatched shapes refused") {
  const Tensor logits = from_doubles({0.1, 0.9, 0.8, 0.2, 0.3, 0.3}, {3, 2});
  CHECK(count_correct(logits, from_doubles({1, 0, 0}, {3}, DType::i64)) == 3);
  CHECK(count_correct(logits, from_doubles({0, 1, 1}, {3}, DType::i64)) == 0);
  CHECK_THROWS_WITH_AS(count_correct(logits, from_doubles({1, 0}, {2}, DType::i64)),
                       doctest::Contains("count_correct"), std::invalid_argument);
}

TEST_CASE("trainer: a graphed step refuses a model that is not on a CUDA device") {
  auto model = mobilenet_v3_small(10, 1);
  Adam adam(model->parameters(), AdamOptions{5e-4});
  CHECK_THROWS_WITH_AS(GraphedTrainStep(*model, adam, nullptr),
                       doctest::Contains("needs the model on a CUDA device; it is on cpu"),
                       std::invalid_argument);
}
