// Learning-rate schedules as pure functions of the step (or epoch) counter:
// lr_at(t) has no hidden state, so a resumed run only needs t.
//   Constant: base
//   Step:     base * gamma^floor(t / step_size)                      (torch StepLR)
//   Cosine:   min + (base - min) * (1 + cos(pi * min(t, T) / T)) / 2  (CosineAnnealingLR, closed
//   form) Warmup:   inner(t) * (start + (1 - start) * t / W) for t < W, then inner(t)
//             (torch LinearLR(start_factor, total_iters=W) chained with `inner`)
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace b3 {

class LrSchedule {
 public:
  virtual ~LrSchedule() = default;
  virtual double lr_at(int64_t t) const = 0;
};

class ConstantLr : public LrSchedule {
 public:
  explicit ConstantLr(double base) : base_(base) {}
  double lr_at(int64_t) const override { return base_; }

 private:
  double base_;
};

class StepLr : public LrSchedule {
 public:
  StepLr(double base, int64_t step_size, double gamma = 0.1);
  double lr_at(int64_t t) const override;

 private:
  double base_;
  int64_t step_size_;
  double gamma_;
};

class CosineLr : public LrSchedule {
 public:
  CosineLr(double base, int64_t total_steps, double min_lr = 0.0);
  double lr_at(int64_t t) const override;

 private:
  double base_;
  int64_t total_steps_;
  double min_lr_;
};

class WarmupLr : public LrSchedule {
 public:
  WarmupLr(std::shared_ptr<const LrSchedule> inner, int64_t warmup_steps,
           double start_factor = 0.0);
  double lr_at(int64_t t) const override;

 private:
  std::shared_ptr<const LrSchedule> inner_;
  int64_t warmup_steps_;
  double start_factor_;
};

// The schedule b3 train's options name (--lr-schedule, --warmup-steps,
// --lr-step-size, --lr-gamma): "constant", "step" (every step_size steps
// times gamma) or "cosine" (to 0 over total_steps), each behind a linear
// warm-up from 0 over warmup_steps when that is > 0. Throws
// std::invalid_argument naming the option for an unknown name or a bad size.
struct LrScheduleChoice {
  std::string name = "constant";
  int64_t warmup_steps = 0;
  int64_t step_size = 0;  // "step": steps between decays (must be > 0)
  double gamma = 0.1;     // "step": the factor of each decay
};
std::shared_ptr<const LrSchedule> make_lr_schedule(const LrScheduleChoice& choice, double base,
                                                   int64_t total_steps);

}  // namespace b3
