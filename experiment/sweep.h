// The batch-size experiment (`b3 sweep`), done so that a skeptic can accept
// it: every batch size trained `repeats` times by run_training()
// (train/train_run.h, the same code as `b3 train`).
//
// Runs are interleaved round-robin: repeat r of every batch size runs before
// repeat r + 1 of any, so slow drift (clock, temperature, other load) spreads
// over all sizes instead of favouring the first; `shuffle` also randomizes
// the order within each round (seeded by the base seed), and a cool-down
// waits between runs. Repeat r uses seed + r - 1 for weights, split and
// shuffling, so the accuracy spread is real spread. A warm-up run, discarded,
// comes first. On a GPU, NVML samples SM clock, temperature and power during
// every run (experiment/nvml.h).
//
// The steps, each a function so that it can be tested without a binary:
//   check_sweep_settings  device and repeats, before anything is read
//   make_cpu_sized_sweep  the CPU's smaller defaults, with a notice
//   plan_sweep            every batch size checked against the training set,
//                         the interleaved order of the runs
//   run_sweep             the runs, one RunRecord each, and the per-batch
//                         summaries (experiment/sweep_summary.h)
// The report files are experiment/sweep_report.h's.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "experiment/nvml.h"
#include "experiment/sweep_summary.h"
#include "train/train_run.h"

namespace b3::experiment {

struct SweepConfig {
  TrainRunConfig base;               // every run's settings; batch_size and seed are set per run
  std::vector<int64_t> batch_sizes;  // in the order given
  int64_t repeats = 3;
  double cooldown_seconds = 0.0;
  int64_t warmup_steps = 2;  // steps of a discarded run before the first one (0: none)
  bool shuffle = false;      // randomize the order within each round
  bool test = true;          // the final test-set evaluation (inference time)
  bool validation = true;    // the validation pass after each epoch
  // Processes training each run together (data parallel under mpirun, as the
  // reference's 4-GPU DDP runs): batch sizes are per rank, the global batch
  // is world_size x batch. run_sweep() needs a process group of this size.
  int world_size = 1;
};

// Which of the options that a CPU sweep scales down the user gave.
struct SweepOptionsGiven {
  bool image_size = false, epochs = false, train_limit = false;
  bool validation_size = false, test_limit = false;
};

// Throws std::invalid_argument when the device is unknown or unusable in
// this build, when no batch size is given, or when repeats < 1.
void check_sweep_settings(const SweepConfig& config);

// On the CPU, the defaults not given scale down as make_cpu_sized() does
// (32x32 images, 1 epoch, 10,000 training images; --steps counts as a
// length), plus a 1,000-image validation split and the first 1,000 test
// images. Returns the notice that says so ("" when nothing changed).
std::string make_cpu_sized_sweep(SweepConfig& config, const SweepOptionsGiven& given);

// One run of the sequence, before it runs.
struct PlannedRun {
  int64_t order = 0;  // 1-based position in the sequence of runs
  int64_t batch_size = 0;
  int64_t repeat = 0;  // 1-based
  uint64_t seed = 0;   // seed + repeat - 1
};

// The interleaved order: `repeats` rounds, each holding every batch size once
// (in the order given, or shuffled by a generator seeded with `seed` that
// runs on across the rounds).
std::vector<PlannedRun> interleaved_runs(const std::vector<int64_t>& batch_sizes, int64_t repeats,
                                         bool shuffle, uint64_t seed);

struct SweepPlan {
  SweepConfig config;      // as run: no progress bar, evaluations as asked
  int64_t train_size = 0;  // training images per run and rank (the largest usable batch)
  std::vector<PlannedRun> runs;
};

// Checks the settings and that every batch size gives at least one step
// (opening the data as a run does), then orders the runs. Nothing trains.
// `quiet`: open the data without notices or a download (see
// training_set_size()).
SweepPlan plan_sweep(const SweepConfig& config, bool quiet = false);

// One finished run.
struct RunRecord {
  int64_t order = 0;              // 1-based position in the sequence of runs
  int64_t batch_size = 0;         // per rank
  int64_t global_batch_size = 0;  // batch_size x world size
  int64_t repeat = 0;             // 1-based
  uint64_t seed = 0;
  std::string started;  // UTC, ISO 8601
  int64_t steps = 0, images = 0;
  double train_seconds = 0.0, images_per_second = 0.0;
  std::optional<double> validation_accuracy, test_accuracy, test_seconds;  // fractions, seconds
  // Test accuracy again after recomputing BatchNorm's running statistics over
  // --bn-recalibrate training batches (nothing when 0).
  std::optional<double> test_recalibrated_accuracy;
  int64_t test_images = 0;
  std::optional<gpu::GpuSampleStats> gpu;
};

// What every figure and table states.
struct SweepContext {
  std::string device, device_name, dtype, layout, data, gpu_note;
  std::string data_short;  // "synthetic images" or "real images", for plot titles
  int64_t parameters = 0;
};

struct SweepResult {
  SweepContext context;
  std::vector<RunRecord> runs;        // in the order run
  std::vector<BatchSummary> summary;  // one per batch size, ascending
};

// What run_sweep() reports while it goes (each may be empty).
struct SweepObserver {
  std::function<void(const std::string&)> on_warning;  // e.g. NVML is missing
  std::function<void(int64_t batch_size, int64_t steps)> on_warmup;
  std::function<void(const RunRecord&, int64_t total_runs)> on_run;
};

// Runs the plan. A failing run stops the sweep with an error naming the run
// (and, for out-of-memory, `b3 maxbatch`). With plan.config.world_size > 1
// every rank of `group` calls it with the same plan; each run is then
// data-parallel (run_training with the group) and its figures are over all
// ranks. Observers may print on rank 0 only: every rank gets the same result.
SweepResult run_sweep(const SweepPlan& plan, const SweepObserver& observer = {},
                      dist::ProcessGroup* group = nullptr);

// The dtype a run trains in, for reports: "f32" on the CPU (or with
// --no-amp), else mixed precision as torch.cuda.amp.
std::string run_dtype(const TrainRunConfig& config);
// "nhwc (channels_last)" or "nchw (contiguous)".
std::string layout_name(const std::string& format);
// Now, UTC, ISO 8601 ("2026-01-31T12:00:00Z").
std::string utc_now();

}  // namespace b3::experiment
