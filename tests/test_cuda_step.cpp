// A whole training step on a GPU, as the benchmark runs it: it queues its
// work without the host ever waiting for the device (the count of host waits
// of tensor/cuda_stream.h stays put over steps that do not read their
// results, in f32 and in mixed precision), and bench-step's device memory is
// measured from the end of the warm-up, as the PyTorch side measures it.
// train() steps a GradScaler the caller owns, whose state a resume checkpoint
// carries. Each case needs a GPU and skips cleanly (exit 77) without one.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>

#include "experiment/step_benchmark.h"
#include "experiment/step_timing.h"
#include "models/mobilenet_v3.h"
#include "optim/adam.h"
#include "optim/grad_scaler.h"
#include "tensor/cuda_stream.h"
#include "tests/support/cuda.h"
#include "train/resume.h"
#include "train/setup.h"
#include "train/trainer.h"

using namespace b3;

namespace {

constexpr int64_t kClasses = 10;

LabeledBatch device_batch(const Device& device) {
  return experiment::uniform_batch(8, 32, kClasses, MemoryFormat::channels_last, device, 5);
}

}  // namespace

TEST_CASE("cuda step: a step that does not read its results never waits for the device") {
  test::skip_unless_cuda_device();
  const Device cuda = Device::cuda(0);
  for (bool amp : {false, true}) {
    CAPTURE(amp);
    auto model = mobilenet_v3_large(kClasses, 3);
    prepare_model(*model, cuda, MemoryFormat::channels_last);
    Adam adam(model->parameters(), AdamOptions{5e-4});
    std::optional<GradScaler> scaler;
    if (amp) scaler.emplace(cuda);
    const LabeledBatch batch = device_batch(cuda);
    StepOptions options;
    options.scaler = scaler ? &*scaler : nullptr;
    options.read_results = false;
    // Warm-up: the algorithm searches, first allocations and optimizer tables
    // may wait; the steps after it must not.
    for (int i = 0; i < 2; ++i) train_step(*model, adam, batch, options);
    const uint64_t before = cuda::host_wait_count(0);
    for (int i = 0; i < 3; ++i) train_step(*model, adam, batch, options);
    CHECK(cuda::host_wait_count(0) == before);
    // The count is live: reading the results waits (at least once).
    options.read_results = true;
    const StepResult read = train_step(*model, adam, batch, options);
    CHECK(cuda::host_wait_count(0) > before);
    CHECK(std::isfinite(read.loss));
  }
}

TEST_CASE("cuda step: bench-step's memory is measured after the warm-up") {
  test::skip_unless_cuda_device();
  experiment::StepBenchmarkConfig config;
  config.batch_size = 8;
  config.image_size = 32;
  config.optimizer = "adam";
  config.warmup = 1;
  config.steps = 2;
  const experiment::CudaStepBenchmark r = experiment::benchmark_cuda_step(config, false);
  const auto parameters = MobileNetV3(experiment::benchmark_model(config)).parameter_count();
  const size_t parameter_bytes = static_cast<size_t>(parameters) * sizeof(float);
  // After one warm-up step the weights and Adam's two moments are all on the
  // device (before it only the weights were).
  CHECK(r.active_bytes_before >= 3 * parameter_bytes);
  CHECK(r.memory.peak_active_bytes >= r.active_bytes_before);
}

TEST_CASE("cuda step: train() steps the caller's GradScaler, and a resume checkpoint carries it") {
  test::skip_unless_cuda_device();
  const Device cuda = Device::cuda(0);
  auto model = mobilenet_v3_small(kClasses, 3);
  prepare_model(*model, cuda, MemoryFormat::channels_last);
  Adam adam(model->parameters(), AdamOptions{5e-4});
  cuda::LossScaleOptions growth_every_two;
  growth_every_two.init_scale = 1024.0f;
  growth_every_two.growth_interval = 2;
  GradScaler scaler(cuda, growth_every_two);
  FixedBatches data({device_batch(cuda), device_batch(cuda), device_batch(cuda)});
  TrainOptions options;
  options.amp = true;
  options.scaler = &scaler;
  train(*model, adam, data, nullptr, options);
  // Three clean steps at a small scale: one growth (after the second), and
  // the tracker counts the third.
  CHECK(scaler.scale() == 2048.0);
  const NamedTensors state = scaler.state_dict();

  TrainProgress progress;
  progress.global_step = 3;
  const ResumePoint point =
      read_resume_point(resume_metadata(progress, {}, *model, state), "c.safetensors");
  GradScaler resumed(cuda, growth_every_two);
  resumed.load_state_dict(point.loss_scale);
  CHECK(resumed.scale() == 2048.0);
  const NamedTensors again = resumed.state_dict();
  REQUIRE(again.size() == state.size());
  for (size_t i = 0; i < state.size(); ++i) {
    CHECK(again[i].first == state[i].first);
    CHECK(again[i].second.item() == state[i].second.item());
  }
}
