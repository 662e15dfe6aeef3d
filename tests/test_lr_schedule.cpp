// Learning-rate schedules against their closed forms, evaluated by hand.
#include <doctest/doctest.h>

#include <cmath>
#include <numbers>

#include "optim/lr_schedule.h"

using namespace b3;

TEST_CASE("constant and step schedules") {
  ConstantLr constant(0.1);
  CHECK(constant.lr_at(0) == 0.1);
  CHECK(constant.lr_at(1000) == 0.1);
  StepLr step(1.0, 3, 0.5);
  CHECK(step.lr_at(0) == 1.0);
  CHECK(step.lr_at(2) == 1.0);
  CHECK(step.lr_at(3) == 0.5);
  CHECK(step.lr_at(8) == 0.25);
  CHECK(step.lr_at(9) == 0.125);
}

TEST_CASE("cosine schedule: base at 0, midpoint average, min at and after the end") {
  CosineLr cosine(0.2, 10, 0.02);
  CHECK(cosine.lr_at(0) == doctest::Approx(0.2).epsilon(1e-15));
  CHECK(cosine.lr_at(5) == doctest::Approx(0.11).epsilon(1e-15));
  CHECK(cosine.lr_at(10) == doctest::Approx(0.02).epsilon(1e-15));
  CHECK(cosine.lr_at(25) == doctest::Approx(0.02).epsilon(1e-15));
  const double quarter = 0.02 + 0.18 * (1.0 + std::cos(std::numbers::pi * 0.3)) / 2.0;
  CHECK(cosine.lr_at(3) == doctest::Approx(quarter).epsilon(1e-15));
}

TEST_CASE("linear warm-up ramps into the inner schedule") {
  auto inner = std::make_shared<CosineLr>(1.0, 100);
  WarmupLr warm(inner, 4, 0.2);
  CHECK(warm.lr_at(0) == doctest::Approx(0.2 * inner->lr_at(0)));
  CHECK(warm.lr_at(2) == doctest::Approx(0.6 * inner->lr_at(2)));
  CHECK(warm.lr_at(4) == doctest::Approx(inner->lr_at(4)));
  CHECK(warm.lr_at(50) == doctest::Approx(inner->lr_at(50)));
}

TEST_CASE("schedule arguments are checked") {
  CHECK_THROWS_WITH_AS(StepLr(0.1, 0), doctest::Contains("step_size"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(CosineLr(0.1, 0), doctest::Contains("total_steps"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(WarmupLr(nullptr, 3), doctest::Contains("null"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(static_cast<void>(StepLr(0.1, 2).lr_at(-1)), doctest::Contains("negative"),
                       std::invalid_argument);
}

TEST_CASE("the command line's schedules: names, warm-up, and clear errors") {
  LrScheduleChoice choice;
  CHECK(make_lr_schedule(choice, 0.1, 100)->lr_at(57) == 0.1);
  choice.name = "step";
  choice.step_size = 10;
  choice.gamma = 0.5;
  CHECK(make_lr_schedule(choice, 0.1, 100)->lr_at(25) == doctest::Approx(0.025).epsilon(1e-15));
  choice.name = "cosine";
  CHECK(make_lr_schedule(choice, 0.1, 100)->lr_at(100) == doctest::Approx(0.0));
  choice.warmup_steps = 10;
  const auto warm = make_lr_schedule(choice, 0.1, 100);
  CHECK(warm->lr_at(0) == 0.0);
  CHECK(warm->lr_at(5) == doctest::Approx(0.5 * CosineLr(0.1, 100).lr_at(5)));
  CHECK(warm->lr_at(50) == CosineLr(0.1, 100).lr_at(50));
  choice.name = "linear";
  CHECK_THROWS_WITH_AS(make_lr_schedule(choice, 0.1, 100), doctest::Contains("--lr-schedule"),
                       std::invalid_argument);
  choice.name = "step";
  choice.step_size = 0;
  CHECK_THROWS_WITH_AS(make_lr_schedule(choice, 0.1, 100), doctest::Contains("--lr-step-size"),
                       std::invalid_argument);
  choice.name = "cosine";
  CHECK_THROWS_AS(make_lr_schedule(choice, 0.1, 0), std::invalid_argument);
  choice.warmup_steps = -1;
  CHECK_THROWS_WITH_AS(make_lr_schedule(choice, 0.1, 10), doctest::Contains("--warmup-steps"),
                       std::invalid_argument);
}
