// The files `b3 train --out DIR` writes about a finished run (train/train_run.h):
//   metrics.csv   one row per epoch: steps, train loss and accuracy, train
//                 time, images/s, validation loss and accuracy
//   metrics.json  the config, the data, every epoch, the train time and the
//                 three test evaluations (eval mode, batch statistics, BN
//                 recalibrated; null when not run)
// Each is written atomically (data/files.h), so a reader never sees half a file.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "train/train_run.h"

namespace b3 {

std::string run_metrics_csv(const TrainRunResult& result);
nlohmann::json run_metrics_json(const TrainRunConfig& config, const TrainRunResult& result);

// Writes metrics.csv and metrics.json into `dir` (which must exist).
void write_run_metrics(const std::filesystem::path& dir, const TrainRunConfig& config,
                       const TrainRunResult& result);

}  // namespace b3
