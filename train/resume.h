// Checkpoints a run can resume from exactly (b3 train --checkpoint-every,
// --resume): what they hold beyond the weights and the optimizer, and the
// files' names and rotation.
//
// A resume checkpoint is save_checkpoint()'s safetensors file (model
// parameters and buffers, the optimizer's whole state: moments, momentum,
// step counts) whose metadata key "b3.resume" holds, as JSON:
//   format      1
//   progress    the loop's TrainProgress: epoch, step in the epoch, global
//               step, the epoch's sums so far, and every finished epoch's
//               report (so metrics.csv comes out as an uninterrupted run's)
//   settings    config_settings() of the run, compared on resume
//   generators  the state of every Dropout's generator, in module order
//   loss_scale  with mixed precision: the GradScaler's scale and growth
//               tracker (its state_dict), so the resumed run scales as the
//               uninterrupted one would
// The rest of the run's randomness is a function of the seed and the
// position: each epoch's shuffle is seeded by (seed, epoch), and the
// augmentation's generator is reseeded at each epoch's start and advanced
// batch by batch, which train() replays by reading and dropping the epoch's
// first batches. So on the CPU a resumed run equals the uninterrupted one bit
// for bit.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "layers/module.h"
#include "optim/optimizer.h"
#include "tensor/safetensors.h"
#include "train/trainer.h"

namespace b3 {

using RunSettings = std::vector<std::pair<std::string, std::string>>;

inline constexpr const char* kResumeMetadataKey = "b3.resume";

// The metadata that makes a checkpoint resumable.
// `loss_scale`: a GradScaler's state_dict(), or empty for a run without one.
SafetensorsMetadata resume_metadata(const TrainProgress& progress, const RunSettings& settings,
                                    Module& model, const NamedTensors& loss_scale = {});

struct ResumePoint {
  TrainProgress progress;
  RunSettings settings;
  std::vector<std::vector<uint64_t>> generators;
  NamedTensors loss_scale;  // GradScaler::load_state_dict's input; empty without one
};

// Reads resume_metadata() back; throws std::invalid_argument naming `path`
// when the metadata is missing (a plain weights file or a final checkpoint)
// or malformed.
ResumePoint read_resume_point(const SafetensorsMetadata& metadata, const std::string& path);

// Restores a resume checkpoint into `model` and `optimizer` (load_checkpoint),
// reads its "b3.resume" metadata and sets the Dropout generators back. Throws
// std::invalid_argument naming `path` for a file that is not a resume
// checkpoint of this model and optimizer.
ResumePoint load_resume_checkpoint(const std::string& path, Module& model, Optimizer& optimizer);

// Every Dropout generator of `model`, in module order: their states, and
// setting them back (throws when the counts differ).
std::vector<std::vector<uint64_t>> generator_states(Module& model);
void restore_generator_states(Module& model, const std::vector<std::vector<uint64_t>>& states);

// Throws std::invalid_argument unless `current` equals `saved` setting by
// setting; the message names each difference with both values. With
// `allow_lr_change`, "lr" may differ; `note` then receives what changed.
void require_same_run(const RunSettings& saved, const RunSettings& current, bool allow_lr_change,
                      const std::string& path, std::string* note = nullptr);

// "checkpoint-step000001234.safetensors": the file of the checkpoint after
// global step `step`; zero-padded so that names sort by step.
std::string checkpoint_file_name(int64_t step);
// The newest (highest step) checkpoint-step*.safetensors in `dir`, if any.
std::optional<std::filesystem::path> newest_checkpoint(const std::filesystem::path& dir);
// Removes all but the `keep` newest checkpoint-step*.safetensors in `dir`
// (call after the newest is safely on disk), and the temporaries of saves
// whose process is gone (a run killed while writing a checkpoint). Between
// a save and this call the directory holds keep + 1 checkpoints.
void remove_old_checkpoints(const std::filesystem::path& dir, int keep);

}  // namespace b3
