// Fine-tuning (models/pretrained.h, `b3 train --init-from --freeze
// --normalize`): a 1000-class MobileNetV3's weights start a 10-class one,
// every tensor copied but the head, which keeps its fresh initialization;
// other differences are errors that change nothing; from the command line,
// with safetensors and with a .pth written by PyTorch, the frozen features
// do not move while the classifier trains; --normalize imagenet reaches the
// inputs.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>

#include "models/mobilenet_v3.h"
#include "models/pretrained.h"
#include "models/state_dict.h"
#include "tensor/safetensors.h"
#include "tensor/torch_file.h"
#include "tests/support/files.h"
#include "tests/support/python.h"

using namespace b3;
namespace fs = std::filesystem;

namespace {

NamedTensors snapshot(const Module& model) {
  NamedTensors out;
  for (const auto& [name, t] : state_dict(model)) out.emplace_back(name, t.clone());
  return out;
}

const Tensor& find(const NamedTensors& tensors, const std::string& name) {
  for (const auto& [key, tensor] : tensors)
    if (key == name) return tensor;
  throw std::runtime_error("no tensor " + name);
}

bool same(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.to_doubles() == b.to_doubles();
}

std::string b3_binary() {
  const char* build = std::getenv("B3_BUILD_DIR");
  REQUIRE_MESSAGE(build != nullptr, "B3_BUILD_DIR is not set: run this test through ctest");
  return std::string(build) + "/b3";
}

// A few steps of training on synthetic data (10 classes) from `weights`,
// the features frozen; returns the exit status, the log in `log`.
int train_from(const std::string& weights, const fs::path& out, std::string& log) {
  fs::create_directories(out);
  const std::string log_path = (out / "train.log").string();
  const std::string command =
      b3_binary() +
      " train --data synthetic --model mobilenet_v3_small --train-limit 64 --validation-size 16 "
      "--test-limit 16 --batch-size 16 --eval-batch-size 16 --steps 3 --workers 1 --init-from '" +
      weights + "' --freeze features --normalize imagenet --out '" + out.string() + "' > '" +
      log_path + "' 2>&1";
  const int status = test::run_command(command);
  log = test::read_text(log_path);
  return status;
}

// After training from `weights` with the features frozen: every parameter of
// the features equals the file's (BatchNorm's running statistics are buffers,
// and move), the classifier's first layer does not.
void check_frozen_features(const NamedTensors& weights, const fs::path& out) {
  const SafetensorsFile trained = load_safetensors((out / "checkpoint.safetensors").string());
  auto model = mobilenet_v3_small(10);
  std::set<std::string> parameters;
  for (const auto& [name, p] : model->named_parameters()) parameters.insert(name);
  int64_t frozen = 0;
  for (const auto& entry : weights) {
    const auto& name = entry.first;  // no structured binding: clang 14's CAPTURE
    const auto& tensor = entry.second;
    if (name.rfind("features.", 0) != 0 || !parameters.count(name)) continue;
    CAPTURE(name);
    CHECK(same(trained.at(name), tensor));
    ++frozen;
  }
  CHECK(frozen > 50);
  CHECK_FALSE(same(trained.at("classifier.0.weight"), find(weights, "classifier.0.weight")));
  // The optimizer holds state for the classifier's 4 tensors only.
  std::set<std::string> optimized;
  for (const auto& [name, tensor] : trained.tensors) {
    if (name.rfind("optimizer.state.", 0) != 0) continue;
    const std::string rest = name.substr(16);
    optimized.insert(rest.substr(0, rest.find('.')));
  }
  CHECK(optimized == std::set<std::string>{"0", "1", "2", "3"});
}

}  // namespace

TEST_CASE("load_pretrained: a 1000-class model's weights start a 10-class one, head fresh") {
  const auto pretrained = mobilenet_v3_small(1000, /*seed=*/7);
  const NamedTensors weights = snapshot(*pretrained);
  const auto model = mobilenet_v3_small(10, /*seed=*/3);
  const NamedTensors fresh = snapshot(*model);

  const PretrainedLoad load = load_pretrained(*model, weights, kMobileNetV3Head, "w.pth");
  CHECK(load.reinitialized ==
        std::vector<std::string>{"classifier.3.weight: file [1000, 1024], model [10, 1024]",
                                 "classifier.3.bias: file [1000], model [10]"});
  CHECK(load.loaded.size() + 2 == fresh.size());
  CHECK(load.skipped.empty());
  for (const auto& entry : state_dict(*model)) {
    const auto& name = entry.first;  // no structured binding: clang 14's CAPTURE
    const auto& tensor = entry.second;
    CAPTURE(name);
    if (name.rfind(kMobileNetV3Head, 0) == 0) {
      CHECK(same(tensor, find(fresh, name)));  // torchvision's init, from the model's seed
    } else {
      CHECK(same(tensor, find(weights, name)));
    }
  }
  const std::string report = describe_pretrained_load(load, "w.pth");
  CHECK(report.find("init from w.pth: loaded " + std::to_string(fresh.size() - 2) +
                    " tensors, re-initialized 2, skipped 0") == 0);
  CHECK(report.find("  re-initialized classifier.3.bias: file [1000], model [10]\n") !=
        std::string::npos);

  // The same class count: everything loads, the head too.
  const auto same_classes = mobilenet_v3_small(1000, /*seed=*/5);
  const PretrainedLoad all = load_pretrained(*same_classes, weights, kMobileNetV3Head, "w.pth");
  CHECK(all.reinitialized.empty());
  CHECK(same(find(state_dict(*same_classes), "classifier.3.weight"),
             find(weights, "classifier.3.weight")));
}

TEST_CASE(
    "load_pretrained: extra keys are skipped; other differences are errors that change "
    "nothing") {
  const NamedTensors weights = snapshot(*mobilenet_v3_small(1000, 7));
  const auto model = mobilenet_v3_small(10, 3);

  NamedTensors extra = weights;
  extra.emplace_back("aux_logits.weight", find(weights, "classifier.3.bias").clone());
  CHECK(load_pretrained(*model, extra, kMobileNetV3Head, "w.pth").skipped ==
        std::vector<std::string>{"aux_logits.weight"});

  const auto fresh_model = mobilenet_v3_small(10, 3);
  const NamedTensors fresh = snapshot(*fresh_model);
  NamedTensors reshaped = weights;
  for (auto& [name, tensor] : reshaped)
    if (name == "features.0.0.weight") tensor = zeros({8, 3, 3, 3});
  CHECK_THROWS_WITH_AS(load_pretrained(*fresh_model, reshaped, kMobileNetV3Head, "w.pth"),
                       doctest::Contains("'features.0.0.weight' has another shape (file [8, 3, 3, "
                                         "3], model [16, 3, 3, 3])"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(load_pretrained(*fresh_model, reshaped, kMobileNetV3Head, "w.pth"),
                       doctest::Contains("w.pth: cannot start MobileNetV3"), std::invalid_argument);
  NamedTensors missing;
  for (const auto& [name, tensor] : weights)
    if (name != "features.0.1.running_mean") missing.emplace_back(name, tensor);
  CHECK_THROWS_WITH_AS(load_pretrained(*fresh_model, missing, kMobileNetV3Head, "w.pth"),
                       doctest::Contains("the file has no 'features.0.1.running_mean'"),
                       std::invalid_argument);
  for (const auto& entry : state_dict(*fresh_model)) {  // nothing copied
    const auto& name = entry.first;                     // no structured binding: clang 14
    const auto& tensor = entry.second;
    CAPTURE(name);
    CHECK(same(tensor, find(fresh, name)));
  }
}

TEST_CASE("b3 train --init-from W.safetensors --freeze features: the features do not move") {
  const test::Scratch scratch("b3-test-fine-tune");
  const auto pretrained = mobilenet_v3_small(1000, 7);
  const std::string weights = scratch / "imagenet.safetensors";
  save_model(weights, *pretrained);
  std::string log;
  REQUIRE_MESSAGE(train_from(weights, scratch.path / "run", log) == 0, log);
  CHECK(log.find("init from " + weights + ": loaded ") != std::string::npos);
  CHECK(log.find("re-initialized 2, skipped 0") != std::string::npos);
  CHECK(log.find("  re-initialized classifier.3.weight: file [1000, 1024], model [10, 1024]") !=
        std::string::npos);
  check_frozen_features(state_dict(*pretrained), scratch.path / "run");
}

TEST_CASE("b3 train --init-from W.pth: torchvision's weights saved by PyTorch start a run") {
  test::skip_unless_torch_available();
  const test::Scratch scratch("b3-test-fine-tune-pth");
  const std::string weights = scratch / "mobilenet_v3_small.pth";
  const std::string script = scratch / "save.py";
  std::ofstream(script) << "import sys, torch, torchvision\n"
                           "torch.manual_seed(0)\n"
                           "model = torchvision.models.mobilenet_v3_small(num_classes=1000)\n"
                           "torch.save(model.state_dict(), sys.argv[1])\n";
  REQUIRE(test::run_command(test::python_executable() + " '" + script + "' '" + weights + "'") ==
          0);
  std::string log;
  REQUIRE_MESSAGE(train_from(weights, scratch.path / "run", log) == 0, log);
  CHECK(log.find("re-initialized 2, skipped 0") != std::string::npos);
  check_frozen_features(load_torch_state_dict(weights), scratch.path / "run");
}

TEST_CASE("b3 train --normalize imagenet changes what the model sees; a bad name is refused") {
  const test::Scratch scratch("b3-test-normalize");
  const std::string base =
      b3_binary() +
      " train --data synthetic --model mobilenet_v3_small --train-limit 32 --validation-size 16 "
      "--test-limit 16 --batch-size 16 --eval-batch-size 16 --steps 1 --workers 1";
  const auto first_epoch = [&](const std::string& options, const std::string& name) {
    const std::string log = scratch / (name + ".log");
    REQUIRE(test::run_command(base + options + " > '" + log + "' 2>&1") == 0);
    // "epoch 1: train loss L acc A%  <time>  <speed>  | val loss ...": the losses.
    for (const std::string& line : test::lines_of(test::read_text(log)))
      if (line.rfind("epoch 1: train loss", 0) == 0)
        return line.substr(0, line.find(" acc")) + line.substr(line.find('|'));
    FAIL("no epoch line in " << log);
    return std::string();
  };
  // The same weights, data and seed: only the inputs' normalization differs.
  const std::string plain = first_epoch("", "plain");
  CHECK(first_epoch(" --normalize none", "none") == plain);
  CHECK(first_epoch(" --normalize imagenet", "imagenet") != plain);
  const std::string log = scratch / "bad.log";
  CHECK(test::run_command(base + " --normalize cifar > '" + log + "' 2>&1") != 0);
  CHECK(test::read_text(log).find("--normalize") != std::string::npos);
}
