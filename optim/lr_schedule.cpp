// The learning-rate schedules' closed forms and their argument checks.
#include "optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <stdexcept>
#include <string>

namespace b3 {

static void check_step(int64_t t, const char* schedule) {
  if (t < 0)
    throw std::invalid_argument(std::string(schedule) + ": step " + std::to_string(t) +
                                " is negative");
}

StepLr::StepLr(double base, int64_t step_size, double gamma)
    : base_(base), step_size_(step_size), gamma_(gamma) {
  if (step_size <= 0)
    throw std::invalid_argument("StepLr: step_size must be positive, got " +
                                std::to_string(step_size));
}

double StepLr::lr_at(int64_t t) const {
  check_step(t, "StepLr");
  return base_ * std::pow(gamma_, static_cast<double>(t / step_size_));
}

CosineLr::CosineLr(double base, int64_t total_steps, double min_lr)
    : base_(base), total_steps_(total_steps), min_lr_(min_lr) {
  if (total_steps <= 0)
    throw std::invalid_argument("CosineLr: total_steps must be positive, got " +
                                std::to_string(total_steps));
}

double CosineLr::lr_at(int64_t t) const {
  check_step(t, "CosineLr");
  const double progress =
      static_cast<double>(std::min(t, total_steps_)) / static_cast<double>(total_steps_);
  return min_lr_ + (base_ - min_lr_) * (1.0 + std::cos(std::numbers::pi * progress)) / 2.0;
}

WarmupLr::WarmupLr(std::shared_ptr<const LrSchedule> inner, int64_t warmup_steps,
                   double start_factor)
    : inner_(std::move(inner)), warmup_steps_(warmup_steps), start_factor_(start_factor) {
  if (!inner_) throw std::invalid_argument("WarmupLr: the inner schedule is null");
  if (warmup_steps < 0)
    throw std::invalid_argument("WarmupLr: warmup_steps must be >= 0, got " +
                                std::to_string(warmup_steps));
  if (start_factor < 0.0 || start_factor > 1.0) {
    throw std::invalid_argument("WarmupLr: start_factor must be in [0, 1], got " +
                                std::to_string(start_factor));
  }
}

double WarmupLr::lr_at(int64_t t) const {
  check_step(t, "WarmupLr");
  if (t >= warmup_steps_) return inner_->lr_at(t);
  const double factor = start_factor_ + (1.0 - start_factor_) * static_cast<double>(t) /
                                            static_cast<double>(warmup_steps_);
  return inner_->lr_at(t) * factor;
}

std::shared_ptr<const LrSchedule> make_lr_schedule(const LrScheduleChoice& choice, double base,
                                                   int64_t total_steps) {
  std::shared_ptr<const LrSchedule> schedule;
  if (choice.name == "constant") {
    schedule = std::make_shared<ConstantLr>(base);
  } else if (choice.name == "step") {
    if (choice.step_size <= 0)
      throw std::invalid_argument("--lr-step-size must be positive for --lr-schedule step, got " +
                                  std::to_string(choice.step_size));
    schedule = std::make_shared<StepLr>(base, choice.step_size, choice.gamma);
  } else if (choice.name == "cosine") {
    if (total_steps <= 0)
      throw std::invalid_argument("--lr-schedule cosine: the run has no steps to anneal over");
    schedule = std::make_shared<CosineLr>(base, total_steps);
  } else {
    throw std::invalid_argument("--lr-schedule must be constant, step or cosine, got '" +
                                choice.name + "'");
  }
  if (choice.warmup_steps < 0)
    throw std::invalid_argument("--warmup-steps must be >= 0, got " +
                                std::to_string(choice.warmup_steps));
  if (choice.warmup_steps > 0) schedule = std::make_shared<WarmupLr>(schedule, choice.warmup_steps);
  return schedule;
}

}  // namespace b3
