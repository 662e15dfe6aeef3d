// Optimizer parity with PyTorch on whole training steps: from the seeded
// weights of mobilenet_v3_large(num_classes=10) (dropout 0) and one batch of
// 4 images at 64x64 (fixtures of tests/reference/make_fixtures.py), train_step
// runs forward, cross-entropy, backward and the optimizer step, repeatedly on
// that batch:
//   - 3 steps of SGD (momentum, Nesterov, weight decay), of Adam and of
//     AdamW (decoupled weight decay 0.1: 3 steps of lr 1e-4 shrink every
//     weight by 3e-5 relative, 30 times the f64 tolerance, so a wrong or
//     missing decay fails): every parameter and buffer afterwards against
//     torch.optim's;
//   - 20 steps of Adam: the 20 losses.
// The hyperparameters are read from the fixture's metadata, so the script and
// this test cannot drift apart.
//
// Errors are relative_error() (tests/support/fixtures.h), per tensor, against
// PyTorch in f64. Tolerances:
//  - b3 f64: parameters and buffers after 3 steps below 1e-6 (the issue's
//    bar), losses below 1e-9. Measured: 2.2e-9 (SGD), 8e-10 (Adam), 3e-11
//    (losses), all of it from PyTorch's f64 hardsigmoid gradient, off by
//    3e-8 relative (see test_parity_layers.cpp) and carried into the weights
//    by each update: PyTorch itself, with the exact 1/6 in hardsigmoid's
//    backward, differs from stock PyTorch by the same 2.2e-9 on the same
//    tensor (features.13.block.1.0.weight) after the 3 SGD steps.
//  - b3 f32: each tensor below max(1e-6, 4 x the worst f32-vs-f64 error
//    PyTorch itself makes on any tensor of the same run). Three large steps
//    amplify what differs between f32 and f64 gradients: rounding, and the
//    chance flips at ReLU/Hardswish kinks (see test_parity_model.cpp), which
//    move whole layers' gradients by ~1e-3; with lr 0.05 SGD changes the
//    depthwise weights by a large fraction, and Adam turns the rounding noise
//    of gradients that vanish in exact arithmetic into updates of up to lr
//    (its m / sqrt(v) does not care how small g is). PyTorch's own f32 run is
//    off by up to ~2.5e-3 on some tensors; which tensors is luck, so the bar
//    is a few times PyTorch's own worst, and the f64 run is the strict test.
//    The 20 Adam losses (lr 1e-4, from 2.3 down to 0.29): below 1e-4
//    relative each, the bar; PyTorch's own f32 error is <= 1e-6.
#include <doctest/doctest.h>

#include <algorithm>
#include <sstream>

#include "models/mobilenet_v3.h"
#include "models/state_dict.h"
#include "optim/adam.h"
#include "optim/sgd.h"
#include "tests/support/fixtures.h"
#include "train/trainer.h"

using namespace b3;

namespace {

constexpr double kF64StateTolerance = 1e-6;
constexpr double kF64LossTolerance = 1e-9;
constexpr double kF32StateFloor = 1e-6;
constexpr double kF32StateFactor = 4.0;  // times PyTorch's own worst, see the top
constexpr double kF32LossTolerance = 1e-4;

const char* const kStart = "mobilenet_v3_large_b4_64";

const SafetensorsFile& expected(DType dtype) {
  static const SafetensorsFile f64 = test::load_fixture("optim.expected_f64.safetensors");
  static const SafetensorsFile f32 = test::load_fixture("optim.expected_f32.safetensors");
  return dtype == DType::f64 ? f64 : f32;
}

double hyper(const std::string& key) {
  const SafetensorsMetadata& m = expected(DType::f64).metadata;
  const auto it = m.find(key);
  if (it == m.end()) throw std::runtime_error("optim fixture metadata lacks " + key);
  return std::stod(it->second);
}

enum class Kind { sgd, adam, adamw };

struct Run {
  NamedTensors state;
  std::vector<double> losses;
};

Run train(Kind kind, DType dtype, int64_t steps) {
  REQUIRE(expected(DType::f64).metadata.at("start") == kStart);
  MobileNetV3Options options;
  options.num_classes = 10;
  options.dropout = 0.0;
  MobileNetV3 model(options);
  load_state_dict(model, test::load_fixture(std::string(kStart) + ".weights.safetensors").tensors);
  model.to(dtype);
  const SafetensorsFile input = test::load_fixture(std::string(kStart) + ".input.safetensors");
  LabeledBatch batch{input.at("input").to(dtype), input.at("target")};

  std::unique_ptr<Optimizer> optimizer;
  if (kind == Kind::sgd) {
    SgdOptions o;
    o.lr = hyper("sgd_lr");
    o.momentum = hyper("sgd_momentum");
    o.nesterov = hyper("sgd_nesterov") != 0.0;
    o.weight_decay = hyper("sgd_weight_decay");
    optimizer = std::make_unique<Sgd>(model.parameters(), o);
  } else {
    AdamOptions o;
    o.lr = hyper("adam_lr");
    o.beta1 = hyper("adam_beta1");
    o.beta2 = hyper("adam_beta2");
    o.eps = hyper("adam_eps");
    o.weight_decay = hyper(kind == Kind::adamw ? "adamw_weight_decay" : "adam_weight_decay");
    if (kind == Kind::adamw)
      optimizer = std::make_unique<AdamW>(model.parameters(), o);
    else
      optimizer = std::make_unique<Adam>(model.parameters(), o);
  }
  Run run;
  for (int64_t step = 0; step < steps; ++step)
    run.losses.push_back(train_step(model, *optimizer, batch).loss);
  run.state = state_dict(model);
  return run;
}

// Compares the model's state after the steps with "<prefix><key>" of the fixtures.
void check_state(const Run& run, const std::string& prefix, DType dtype) {
  // PyTorch's own worst f32 error in this run sets the f32 bar.
  double torch_worst = 0;
  std::string torch_worst_name;
  for (const auto& [key, tensor] : run.state) {
    const Tensor& reference = expected(DType::f64).at(prefix + key);
    if (!is_floating(reference.dtype())) continue;
    const double torch_own = test::relative_error(expected(DType::f32).at(prefix + key), reference);
    if (torch_own > torch_worst) torch_worst = torch_own, torch_worst_name = key;
  }
  const double f32_tolerance = std::max(kF32StateFloor, kF32StateFactor * torch_worst);

  double worst = 0;
  std::string worst_name;
  size_t compared = 0;
  for (const auto& entry : run.state) {
    const auto& key = entry.first;      // not structured bindings: CAPTURE's
    const auto& tensor = entry.second;  // lambda cannot take them (clang 14)
    CAPTURE(key);
    CAPTURE(std::string(dtype_name(dtype)));
    const Tensor& reference = expected(DType::f64).at(prefix + key);
    if (!is_floating(reference.dtype())) {
      CHECK(tensor.to_doubles() == reference.to_doubles());  // num_batches_tracked
      continue;
    }
    const double error = test::relative_error(tensor, reference);
    CAPTURE(error);
    CAPTURE(test::relative_error(expected(DType::f32).at(prefix + key), reference));
    CHECK(error < (dtype == DType::f64 ? kF64StateTolerance : f32_tolerance));
    if (error > worst) worst = error, worst_name = key;
    ++compared;
  }
  CHECK(compared == 312 - 46);  // every parameter and float buffer (46 num_batches_tracked)
  std::ostringstream summary;
  summary << prefix << " " << dtype_name(dtype) << " after 3 steps: worst " << worst << " ("
          << worst_name << ")";
  if (dtype == DType::f32) {
    summary << "; PyTorch's own f32 worst " << torch_worst << " (" << torch_worst_name << ")";
  }
  MESSAGE(summary.str());
}

}  // namespace

TEST_CASE("parity optim: 3 steps of SGD (momentum 0.9, Nesterov, weight decay), f64 and f32") {
  for (DType dtype : {DType::f64, DType::f32})
    check_state(train(Kind::sgd, dtype, 3), "sgd.", dtype);
}

TEST_CASE("parity optim: 3 steps of Adam, f64 and f32") {
  for (DType dtype : {DType::f64, DType::f32})
    check_state(train(Kind::adam, dtype, 3), "adam.", dtype);
}

TEST_CASE("parity optim: 3 steps of AdamW (decoupled weight decay 0.1), f64 and f32") {
  for (DType dtype : {DType::f64, DType::f32})
    check_state(train(Kind::adamw, dtype, 3), "adamw.", dtype);
}

TEST_CASE("parity optim: the losses of 20 Adam steps on one batch, f64 and f32") {
  const int64_t steps = static_cast<int64_t>(hyper("adam_long_steps"));
  const std::vector<double> reference = expected(DType::f64).at("adam20.losses").to_doubles();
  REQUIRE(static_cast<int64_t>(reference.size()) == steps);
  for (DType dtype : {DType::f64, DType::f32}) {
    const Run run = train(Kind::adam, dtype, steps);
    double worst = 0;
    for (int64_t i = 0; i < steps; ++i) {
      const size_t k = static_cast<size_t>(i);
      CAPTURE(i);
      const double error = std::abs(run.losses[k] - reference[k]) / std::abs(reference[k]);
      CHECK(error < (dtype == DType::f64 ? kF64LossTolerance : kF32LossTolerance));
      worst = std::max(worst, error);
    }
    CHECK(run.losses.back() < 0.5 * run.losses.front());  // it really trained
    MESSAGE("adam " << steps << " losses " << std::string(dtype_name(dtype)) << ": "
                    << run.losses.front() << " -> " << run.losses.back()
                    << ", worst relative error " << worst);
  }
}
