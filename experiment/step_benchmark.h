// The step benchmark (`b3 bench-step`): the throughput of one training step,
// the unit that train() repeats (train_step in train/trainer.h: forward,
// cross-entropy, backward, optimizer step), on synthetic tensors already in
// memory, so that neither data loading nor evaluation is timed.
//
// CPU: warm-up steps (not timed: first-touch page faults, allocator caches
// fill), then each timed step timed on its own; the median img/s is the
// figure. Memory: the peak resident set of the process and the resident set
// after the model, optimizer and batch exist; their difference divided by
// the batch is "step memory per image" (activations saved for backward,
// gradients, workspaces). experiment/pytorch_step.py reports the same two
// numbers the same way. Also the host allocator's own peak of bytes in use
// by tensors (tensor/allocator.h).
//
// CUDA: the model is moved to the GPU (channels_last weights for NHWC), the
// batch uploaded once, the step in mixed precision by default with a
// GradScaler, as the reference benchmark's torch.cuda.amp. The timed steps
// run back to back between two synchronizations (time_train_steps(),
// experiment/step_timing.h; the last step reads its loss) and the figure is
// their mean img/s. Memory is the device caching allocator's peak of bytes
// in use (active) and held (reserved) during the steps. With cuda_graph the
// timed steps are replays of the step captured as one CUDA graph.
//
// Both read the step against its analytic cost (experiment/step_cost.h) and
// a memory bandwidth: the device's theoretical peak on CUDA, a measured host
// copy bandwidth on the CPU.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "distributed/process_group.h"
#include "experiment/benchmark_workload.h"
#include "experiment/step_cost.h"
#include "models/mobilenet_v3.h"
#include "tensor/allocator.h"
#include "tensor/cuda_allocator.h"
#include "train/setup.h"
#include "train/trainer.h"

namespace b3::experiment {

// The workload (experiment/benchmark_workload.h: model, batch, repetitions)
// and what only the training step has.
struct StepBenchmarkConfig : BenchmarkWorkload {
  std::string optimizer = "sgd";  // sgd (lr 0.01, momentum 0.9) | adam (lr 5e-4)
  bool cuda_graph = false;        // CUDA: replay the step as a CUDA graph (train/graphed_step.h)
  double bucket_mb = 25.0;        // data parallel (under mpirun): gradient bucket cap in MiB
  std::string overlap = "auto";   // data parallel: buckets during backward? auto | on | off
};

// bench-step's optimizer defaults.
OptimizerConfig step_benchmark_optimizer(const StepBenchmarkConfig& config);

struct CpuStepBenchmark {
  std::vector<double> images_per_second, cpu_seconds;  // one per timed step
  double median_images_per_second = 0.0, median_cpu_seconds = 0.0;
  double last_loss = 0.0;
  double rss_before_mib = 0.0, peak_rss_mib = 0.0;
  double step_mib_per_image = 0.0;  // (peak RSS - RSS before) / batch
  double tensors_before_mib = 0.0;  // the host allocator's bytes in use before the steps
  HostMemoryStats tensors;          // ... and its statistics after them
  int world_size = 1;               // data-parallel ranks
  bool overlapped = false;          // buckets all-reduced during backward (a communication thread)
  // Data parallel, medians per timed step: seconds of the gradient buckets'
  // all-reduces (with packing), seconds the step waited for them after
  // backward (the part not hidden behind it), and the step itself.
  double median_reduce_seconds = 0.0, median_waited_seconds = 0.0, median_step_seconds = 0.0;
};

// The CPU benchmark; `on_step` (may be empty) sees each timed step's index,
// img/s and CPU seconds. With a process group of N > 1 ranks (under mpirun)
// every rank runs it: each on its own batch (seed + 1 + rank) of
// config.batch_size, gradients averaged (distributed/data_parallel.h); the
// img/s figures are then global (N x batch per step time).
CpuStepBenchmark benchmark_cpu_step(const StepBenchmarkConfig& config,
                                    const std::function<void(int64_t step, double images_per_second,
                                                             double cpu_seconds)>& on_step = {},
                                    dist::ProcessGroup* group = nullptr);

struct CudaStepBenchmark {
  double seconds = 0.0;  // all timed steps
  double images_per_second = 0.0;
  StepResult last;                 // the last step's loss (and loss scale)
  size_t active_bytes_before = 0;  // when the warm-up ended (weights, optimizer state, ...)
  cuda::MemoryStats memory;        // after the steps; peaks since the warm-up ended
};

// The CUDA benchmark on device 0, f16 mixed precision with `amp`.
CudaStepBenchmark benchmark_cuda_step(const StepBenchmarkConfig& config, bool amp);

// The step's analytic cost read against its time and a bandwidth.
struct StepCostReading {
  PassCost total;
  AchievedRate rate;
};
StepCostReading read_step_cost(const StepBenchmarkConfig& config, int64_t activation_bytes,
                               double seconds_per_step, double bandwidth);

}  // namespace b3::experiment
