// The files of a training run (train/run_metrics.h) on a hand-made result:
// metrics.csv's columns and rows, metrics.json's config and evaluations, and
// both written whole, with no temporary file left.
#include <doctest/doctest.h>

#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/support/files.h"
#include "train/run_metrics.h"

using namespace b3;

namespace {

using b3::test::read_text;

TrainRunResult hand_result() {
  TrainRunResult r;
  r.data_description = "synthetic (test)";
  r.synthetic = true;
  EpochReport first;
  first.epoch = 0;
  first.steps = 10;
  first.train_loss = 2.25;
  first.train_accuracy = 0.125;
  first.train_seconds = 1.5;
  first.images_per_second = 853.3333;
  first.validation = EvalResult{2.0, 0.25, 100, 0.5};
  EpochReport second = first;
  second.epoch = 1;
  second.validation.reset();
  r.epochs = {first, second};
  r.steps = 20;
  r.train_seconds = 3.0;
  r.images_per_second = 853.3333;
  r.test = EvalResult{1.75, 0.5, 1000, 2.0};
  return r;
}

}  // namespace

TEST_CASE("run metrics: one CSV row per epoch, validation cells empty when none") {
  const std::string csv = run_metrics_csv(hand_result());
  CHECK(csv ==
        "epoch,steps,train_loss,train_accuracy,train_seconds,images_per_second,val_loss,val_"
        "accuracy\n"
        "1,10,2.250000,0.125000,1.500,853.33,2.000000,0.250000\n"
        "2,10,2.250000,0.125000,1.500,853.33,,\n");
}

TEST_CASE("run metrics: the JSON states the config, the epochs and every evaluation") {
  TrainRunConfig config;
  config.device = "cpu";
  config.batch_size = 64;
  const nlohmann::json json = run_metrics_json(config, hand_result());
  CHECK(json["config"]["batch_size"] == 64);
  CHECK(json["config"]["dtype"] == "f32");
  CHECK(json["config"]["optimizer"] == "adam");
  CHECK(json["synthetic"] == true);
  REQUIRE(json["epochs"].size() == 2);
  CHECK(json["epochs"][0]["epoch"] == 1);
  CHECK(json["epochs"][0]["validation"]["accuracy"] == 0.25);
  CHECK(json["epochs"][1]["validation"].is_null());
  CHECK(json["test_eval_mode"]["images"] == 1000);
  CHECK(json["test_batch_statistics"].is_null());
  CHECK(json["train_seconds"] == 3.0);

  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("b3-run-metrics-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  write_run_metrics(dir, config, hand_result());
  CHECK(read_text(dir / "metrics.csv") == run_metrics_csv(hand_result()));
  CHECK(nlohmann::json::parse(read_text(dir / "metrics.json"))["epochs"] == json["epochs"]);
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    CHECK(entry.path().extension() != ".partial");
    ++files;
  }
  CHECK(files == 2);
  std::filesystem::remove_all(dir);
}
