// metrics.csv and metrics.json of a training run (see run_metrics.h).
#include "train/run_metrics.h"

#include <cstdio>

#include "data/files.h"

namespace b3 {

namespace {

nlohmann::json eval_json(const std::optional<EvalResult>& e) {
  if (!e) return nullptr;
  return {
      {"loss", e->loss}, {"accuracy", e->accuracy}, {"images", e->images}, {"seconds", e->seconds}};
}

nlohmann::json epoch_json(const EpochReport& e) {
  return {{"epoch", e.epoch + 1},
          {"steps", e.steps},
          {"train_loss", e.train_loss},
          {"train_accuracy", e.train_accuracy},
          {"train_seconds", e.train_seconds},
          {"images_per_second", e.images_per_second},
          {"validation", eval_json(e.validation)}};
}

void write_atomically(const std::filesystem::path& path, const std::string& text) {
  AtomicFileWriter writer(path.string(), "write_run_metrics");
  writer.write(text.data(), text.size());
  writer.commit();
}

}  // namespace

std::string run_metrics_csv(const TrainRunResult& r) {
  std::string csv =
      "epoch,steps,train_loss,train_accuracy,train_seconds,images_per_second,val_loss,val_"
      "accuracy\n";
  for (const EpochReport& e : r.epochs) {
    char line[256];
    std::snprintf(line, sizeof line, "%lld,%lld,%.6f,%.6f,%.3f,%.2f,%s,%s\n",
                  static_cast<long long>(e.epoch + 1), static_cast<long long>(e.steps),
                  e.train_loss, e.train_accuracy, e.train_seconds, e.images_per_second,
                  e.validation ? std::to_string(e.validation->loss).c_str() : "",
                  e.validation ? std::to_string(e.validation->accuracy).c_str() : "");
    csv += line;
  }
  return csv;
}

nlohmann::json run_metrics_json(const TrainRunConfig& config, const TrainRunResult& r) {
  nlohmann::json epochs = nlohmann::json::array();
  for (const EpochReport& e : r.epochs) epochs.push_back(epoch_json(e));
  return {{"config",
           {{"device", config.device},
            {"model", config.model},
            {"image_size", config.image_size},
            {"batch_size", config.batch_size},  // per process, as DDP's
            {"world_size", r.world_size},
            {"global_batch_size", config.batch_size * r.world_size},
            {"epochs", config.epochs},
            {"steps", config.steps},
            {"optimizer", config.optimizer},
            {"lr", config.lr},
            {"format", config.format},
            {"seed", config.seed},
            {"dtype", amp_enabled(config) ? "amp-f16" : "f32"}}},
          {"data", r.data_description},
          {"synthetic", r.synthetic},
          {"epochs", epochs},
          {"train_seconds", r.train_seconds},
          {"images_per_second", r.images_per_second},
          {"test_eval_mode", eval_json(r.test)},
          {"test_batch_statistics", eval_json(r.test_batch_stats)},
          {"test_recalibrated", eval_json(r.test_recalibrated)}};
}

void write_run_metrics(const std::filesystem::path& dir, const TrainRunConfig& config,
                       const TrainRunResult& result) {
  write_atomically(dir / "metrics.csv", run_metrics_csv(result));
  write_atomically(dir / "metrics.json", run_metrics_json(config, result).dump(2) + "\n");
}

}  // namespace b3
