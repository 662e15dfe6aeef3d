// The training step replayed as a CUDA graph (train/graphed_step.h over
// tensor/cuda_graph.h): 20 graphed steps leave exactly the weights, buffers
// and losses that 20 eager steps leave, in f32 and in mixed precision, on a
// new batch each step and with dropout drawing a fresh mask at each replay;
// replays never wait for the host; a host wait inside a capture, a batch of
// another shape and a changed learning rate are refused with clear errors.
// Each case needs a GPU and skips cleanly (exit 77) without one.
//
// Bit for bit, not within a tolerance: a replay runs the very kernels the
// eager step launches, on the same data, so any difference is a graph bug
// (a stale input, a reused address, a frozen random key). Convolutions are
// made deterministic for this (cuDNN's atomics-based algorithms could differ
// between any two runs, graphed or not).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "experiment/step_timing.h"
#include "layers/conv2d_cuda.h"
#include "models/mobilenet_v3.h"
#include "optim/adam.h"
#include "optim/grad_scaler.h"
#include "tensor/cuda_graph.h"
#include "tensor/cuda_stream.h"
#include "tensor/ops.h"
#include "tests/support/cuda.h"
#include "train/graphed_step.h"
#include "train/setup.h"
#include "train/trainer.h"

using namespace b3;

namespace {

constexpr int64_t kClasses = 10;
constexpr int kSteps = 20;

LabeledBatch batch_number(int i, int64_t batch = 8) {
  return experiment::uniform_batch(batch, 32, kClasses, MemoryFormat::channels_last,
                                   Device::cuda(0), 100 + static_cast<uint64_t>(i));
}

// Every parameter and buffer of `model` as raw bytes on the host, by name.
std::vector<std::pair<std::string, std::vector<unsigned char>>> snapshot(const Module& model) {
  std::vector<std::pair<std::string, std::vector<unsigned char>>> out;
  auto add = [&](const std::string& name, const Tensor& t) {
    const Tensor host = t.to(Device::cpu()).contiguous();
    const auto* bytes = static_cast<const unsigned char*>(host.data_ptr());
    out.emplace_back(name, std::vector<unsigned char>(bytes, bytes + host.nbytes()));
  };
  for (const auto& [name, p] : model.named_parameters()) add(name, p);
  for (const auto& [name, b] : model.named_buffers()) add(name, b);
  return out;
}

// A MobileNetV3 on cuda:0 with channels_last weights, and Adam (lr 5e-4) over it.
struct PreparedModel {
  std::shared_ptr<MobileNetV3> model;
  std::unique_ptr<Adam> adam;
};
PreparedModel prepared(std::shared_ptr<MobileNetV3> model) {
  prepare_model(*model, Device::cuda(0), MemoryFormat::channels_last);
  auto adam = std::make_unique<Adam>(model->parameters(), AdamOptions{5e-4});
  return {std::move(model), std::move(adam)};
}

void require_identical(const Module& eager, const Module& graphed) {
  const auto a = snapshot(eager);
  const auto b = snapshot(graphed);
  REQUIRE(a.size() == b.size());
  int differing = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].second != b[i].second) {
      if (++differing <= 5) MESSAGE("differs: " << a[i].first);
    }
  }
  CHECK(differing == 0);
}

}  // namespace

TEST_CASE("cuda graph: 20 replayed steps equal 20 eager steps bit for bit") {
  test::skip_unless_cuda_device();
  const Device cuda = Device::cuda(0);
  cuda::set_deterministic_convolutions(0, true);
  for (bool amp : {false, true}) {
    CAPTURE(amp);
    const PreparedModel eager = prepared(mobilenet_v3_large(kClasses, 7));
    const PreparedModel graphed_run = prepared(mobilenet_v3_large(kClasses, 7));
    std::optional<GradScaler> eager_scaler, graphed_scaler;
    if (amp) {
      eager_scaler.emplace(cuda);
      graphed_scaler.emplace(cuda);
    }
    StepOptions eager_options, graphed_options;
    eager_options.scaler = eager_scaler ? &*eager_scaler : nullptr;
    graphed_options.scaler = graphed_scaler ? &*graphed_scaler : nullptr;
    GraphedTrainStep graphed(*graphed_run.model, *graphed_run.adam, graphed_options.scaler);
    for (int i = 0; i < kSteps; ++i) {
      CAPTURE(i);
      const LabeledBatch batch = batch_number(i);
      const StepResult e = train_step(*eager.model, *eager.adam, batch, eager_options);
      const StepResult g = graphed.step(batch, graphed_options);
      CHECK(g.loss == e.loss);  // exact: the same kernels on the same data
      CHECK(g.correct == e.correct);
      CHECK(g.loss_scale == e.loss_scale);
      CHECK(g.skipped == e.skipped);
    }
    CHECK(graphed.captured());
    CHECK(graphed.steps() == kSteps);
    require_identical(*eager.model, *graphed_run.model);
  }
  cuda::set_deterministic_convolutions(0, false);
}

TEST_CASE("cuda graph: replayed steps never wait for the host") {
  test::skip_unless_cuda_device();
  const PreparedModel p = prepared(mobilenet_v3_large(kClasses, 3));
  GradScaler scaler(Device::cuda(0));
  StepOptions options;
  options.scaler = &scaler;
  options.read_results = false;
  GraphedTrainStep graphed(*p.model, *p.adam, &scaler);
  const LabeledBatch batch = batch_number(0);
  graphed.step(batch, options);  // eager
  graphed.step(batch, options);  // captured, then replayed
  REQUIRE(graphed.captured());
  const uint64_t before = cuda::host_wait_count(0);
  for (int i = 0; i < 5; ++i) graphed.step(batch, options);
  CHECK(cuda::host_wait_count(0) == before);
  options.read_results = true;
  const StepResult read = graphed.step(batch, options);
  CHECK(std::isfinite(read.loss));
  CHECK(cuda::host_wait_count(0) > before);
}

TEST_CASE("cuda graph: a host wait inside a capture is refused, and the stream works afterwards") {
  test::skip_unless_cuda_device();
  const Tensor a = full({4}, 2.0).to(Device::cuda(0));
  {
    cuda::CudaGraph graph(0);
    graph.capture_begin();
    CHECK_THROWS_WITH_AS(cuda::synchronize(cuda::compute_stream(0)),
                         doctest::Contains("inside a CUDA graph capture"), std::logic_error);
    CHECK_THROWS_WITH_AS(a.to(Device::cpu()), doctest::Contains("copy to the host"),
                         std::logic_error);
    graph.abandon_capture();
    CHECK_FALSE(graph.captured());
    CHECK_THROWS_AS(graph.replay(), std::logic_error);
  }
  const Tensor back = add(a, a).to(Device::cpu());
  CHECK(back.to_doubles() == std::vector<double>{4.0, 4.0, 4.0, 4.0});
}

TEST_CASE("cuda graph: a captured graph replays on its own buffers") {
  test::skip_unless_cuda_device();
  Tensor input = full({1000}, 1.0).to(Device::cuda(0));
  Tensor output;
  cuda::CudaGraph graph(0);
  graph.capture_begin();
  output = scale(input, 3.0);  // allocated from the graph's private pool
  graph.capture_end();
  graph.replay();
  CHECK(output.to(Device::cpu()).to_doubles() == std::vector<double>(1000, 3.0));
  input.copy_(full({1000}, 2.0));  // new data in the same buffer (an upload, outside the capture)
  graph.replay();
  CHECK(output.to(Device::cpu()).to_doubles() == std::vector<double>(1000, 6.0));
}

TEST_CASE("cuda graph: another batch shape and a changed learning rate are refused") {
  test::skip_unless_cuda_device();
  const PreparedModel p = prepared(mobilenet_v3_small(kClasses, 3));
  GraphedTrainStep graphed(*p.model, *p.adam, nullptr);
  StepOptions options;
  graphed.step(batch_number(0), options);
  graphed.step(batch_number(1), options);
  REQUIRE(graphed.captured());
  CHECK_THROWS_WITH_AS(graphed.step(batch_number(2, 4), options),
                       doctest::Contains("captured for images [8, 3, 32, 32]"),
                       std::invalid_argument);
  p.adam->set_lr(1e-4);
  CHECK_THROWS_WITH_AS(graphed.step(batch_number(3), options),
                       doctest::Contains("learning rate changed"), std::logic_error);
}
