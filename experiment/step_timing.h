// Timing a run of training steps, the way `b3 layout` and `b3 bench-step
// --device cuda` measure them: the step is train_step() (train/trainer.h),
// the step the training loop runs, so a measurement can never time other
// code than training does.
//
//   warm-up steps (untimed: first-touch page faults, allocator caches,
//   cuDNN's algorithm search), a synchronization, then `steps` steps back to
//   back and a second synchronization; the figure is the mean time per step.
//
// On a CUDA device the steps are only queued (StepOptions::read_results
// false), so no host read separates them; with `read_last_step` the last one
// reads its loss (and loss scale) back, inside the timed block. On the CPU
// every step reads its results, as train() does. With `cuda_graph` (CUDA
// only) the steps are GraphedTrainStep's (train/graphed_step.h): the first
// two warm-up steps are its eager step and its capture (at least two warm-up
// steps run then), the timed ones replays.
#pragma once

#include <cstdint>

#include "data/batch_source.h"
#include "layers/module.h"
#include "optim/grad_scaler.h"
#include "optim/optimizer.h"
#include "train/trainer.h"

namespace b3::experiment {

// The synthetic batch the layout, memory and profile measurements train on:
// images uniform in [0, 1) in `format`, labels in [0, classes), both drawn
// from a Generator seeded with `seed` (images first), then moved to `device`.
LabeledBatch uniform_batch(int64_t batch, int64_t image_size, int64_t classes, MemoryFormat format,
                           const Device& device, uint64_t seed);

struct TimedSteps {
  double seconds_per_step = 0.0;
  StepResult last;  // the last step's results (zeros unless they were read)
  // On a CUDA device: the caching allocator's active bytes when the warm-up
  // ended; its peak counter is reset then, so the peak it reports afterwards
  // covers the timed steps only (as PyTorch's reset_peak_memory_stats after
  // warm-up), not the algorithm searches' workspaces of the first step.
  size_t device_active_bytes_after_warmup = 0;
};

// `scaler`: mixed precision (forward under autocast, loss-scaled backward),
// or nullptr for f32. Throws std::invalid_argument for steps < 1.
TimedSteps time_train_steps(Module& model, Optimizer& optimizer, const LabeledBatch& batch,
                            GradScaler* scaler, int64_t warmup, int64_t steps,
                            bool read_last_step = false, bool cuda_graph = false);

}  // namespace b3::experiment
