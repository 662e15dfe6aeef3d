// State dicts and checkpoints: torchvision's key order, strict loading that
// copies into the existing tensors (handles stay valid), clear errors that
// change nothing, and model/optimizer round trips through safetensors files.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "layers/batchnorm2d.h"
#include "layers/conv2d.h"
#include "models/mobilenet_v3.h"
#include "models/state_dict.h"
#include "optim/adam.h"
#include "optim/sgd.h"
#include "tests/support/reference.h"
#include "train/trainer.h"

using namespace b3;

namespace {

std::vector<std::string> keys(const NamedTensors& tensors) {
  std::vector<std::string> out;
  for (const auto& [name, t] : tensors) out.push_back(name);
  return out;
}

std::filesystem::path scratch_dir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("b3-test-state-dict-" + std::to_string(::getpid()) + "-" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Every tensor of `a` equals the one of the same name in `b`, bit for bit.
bool same_values(const NamedTensors& a, const NamedTensors& b) {
  if (keys(a) != keys(b)) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].second.to_doubles() != b[i].second.to_doubles()) return false;
  return true;
}

NamedTensors snapshot(const Module& m) {
  NamedTensors out;
  for (const auto& [name, t] : state_dict(m)) out.emplace_back(name, t.clone());
  return out;
}

// Dropout off: its mask stream is not model state, so two runs continue
// identically only without it.
std::shared_ptr<MobileNetV3> small_without_dropout(uint64_t seed) {
  MobileNetV3Options options;
  options.arch = MobileNetV3Arch::small;
  options.num_classes = 10;
  options.dropout = 0.0;
  options.seed = seed;
  return std::make_shared<MobileNetV3>(options);
}

LabeledBatch small_batch() {
  Generator gen(5);
  return {rand({2, 3, 32, 32}, gen), from_doubles({1, 7}, {2}, DType::i64)};
}

// A module with its own parameter and buffer besides children, to pin the
// order: own parameters, own buffers, then children (torch's state_dict).
class Mixed : public Module {
 public:
  explicit Mixed(Generator& gen) {
    scale = register_parameter("scale", ones({1}));
    register_module("bn", std::make_shared<BatchNorm2d>(2));
    count = register_buffer("count", zeros({}, DType::i64));
    Conv2dOptions o;
    o.in_channels = 2;
    o.out_channels = 2;
    register_module("conv", std::make_shared<Conv2d>(o, gen));
  }
  Tensor forward(const Tensor& x) override { return x; }
  Tensor scale, count;
};

}  // namespace

TEST_CASE("state_dict: torchvision's order and keys") {
  Generator gen(1);
  const Mixed mixed(gen);
  CHECK(keys(state_dict(mixed)) ==
        std::vector<std::string>{"scale", "count", "bn.weight", "bn.bias", "bn.running_mean",
                                 "bn.running_var", "bn.num_batches_tracked", "conv.weight",
                                 "conv.bias"});

  // torchvision 0.14: list(mobilenet_v3_large(num_classes=10).state_dict())[:8], len, [-1].
  const auto large = mobilenet_v3_large(10);
  const NamedTensors sd = state_dict(*large);
  CHECK(sd.size() == 312);
  const std::vector<std::string> first{
      "features.0.0.weight",         "features.0.1.weight",
      "features.0.1.bias",           "features.0.1.running_mean",
      "features.0.1.running_var",    "features.0.1.num_batches_tracked",
      "features.1.block.0.0.weight", "features.1.block.0.1.weight"};
  const std::vector<std::string> names = keys(sd);
  CHECK(std::vector<std::string>(names.begin(), names.begin() + 8) == first);
  CHECK(sd.back().first == "classifier.3.bias");
  CHECK(sd[sd.size() - 5].first == "features.16.1.num_batches_tracked");
  // The entries are the model's own tensors, not copies.
  CHECK(sd[0].second.is_same(large->named_parameters()[0].second));
  CHECK(sd[3].second.is_same(large->named_buffers()[0].second));
  CHECK(state_dict(*mobilenet_v3_small(10)).size() == 244);
}

TEST_CASE("load_state_dict: copies values into the existing tensors") {
  const auto source = mobilenet_v3_small(10, 1);
  const auto target = mobilenet_v3_small(10, 2);
  // Make the source's buffers non-trivial: one training forward.
  source->train();
  source->forward(small_batch().images);
  const NamedTensors before = state_dict(*target);
  std::vector<const void*> storage;
  for (const auto& [name, t] : before) storage.push_back(t.data_ptr());

  CHECK_FALSE(same_values(snapshot(*source), snapshot(*target)));
  load_state_dict(*target, state_dict(*source));
  CHECK(same_values(snapshot(*source), snapshot(*target)));
  const NamedTensors after = state_dict(*target);
  for (size_t i = 0; i < after.size(); ++i) {
    CAPTURE(after[i].first);
    CHECK(after[i].second.is_same(before[i].second));  // same handles
    CHECK(after[i].second.data_ptr() == storage[i]);   // same storage
  }
  for (const auto& [name, p] : target->named_parameters()) CHECK(p.requires_grad());

  // Values given in another layout (channels_last) or order still load.
  NamedTensors reordered = snapshot(*source);
  std::reverse(reordered.begin(), reordered.end());
  for (auto& [name, t] : reordered)
    if (t.dim() == 4) t = t.contiguous(MemoryFormat::channels_last);
  const auto third = mobilenet_v3_small(10, 3);
  load_state_dict(*third, reordered);
  CHECK(same_values(snapshot(*source), snapshot(*third)));
}

TEST_CASE("load_state_dict: mismatches name the key and change nothing") {
  const auto model = mobilenet_v3_small(10, 4);
  const NamedTensors original = snapshot(*model);
  using doctest::Contains;
  auto modified = [&](auto&& edit) {
    NamedTensors sd = snapshot(*mobilenet_v3_small(10, 5));
    edit(sd);
    return sd;
  };
  auto find = [](NamedTensors& sd, const std::string& key) -> Tensor& {
    for (auto& [name, t] : sd)
      if (name == key) return t;
    throw std::logic_error("no " + key);
  };

  CHECK_THROWS_WITH_AS(
      load_state_dict(*model, modified([](NamedTensors& sd) { sd.erase(sd.begin() + 3); })),
      Contains("missing keys: features.0.1.running_mean"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(load_state_dict(*model, modified([](NamedTensors& sd) {
                         sd.emplace_back("classifier.9.weight", zeros({1}));
                       })),
                       Contains("unexpected keys: classifier.9.weight"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      load_state_dict(*model, modified([&](NamedTensors& sd) {
        find(sd, "classifier.3.weight") = zeros({1000, 1024});
      })),
      Contains("'classifier.3.weight' has shape [1000, 1024], the model expects [10, 1024]"),
      std::invalid_argument);
  CHECK_THROWS_WITH_AS(load_state_dict(*model, modified([&](NamedTensors& sd) {
                         Tensor& w = find(sd, "features.0.1.bias");
                         w = w.to(DType::f64);
                       })),
                       Contains("'features.0.1.bias' has dtype f64, the model expects f32"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      load_state_dict(*model, modified([&](NamedTensors& sd) {
        Tensor& n = find(sd, "features.0.1.num_batches_tracked");
        n = n.to(DType::f32);
      })),
      Contains("'features.0.1.num_batches_tracked' has dtype f32, the model expects i64"),
      std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      load_state_dict(*model, modified([](NamedTensors& sd) { sd.push_back(sd.front()); })),
      Contains("key 'features.0.0.weight' appears twice"), std::invalid_argument);
  // The last key is wrong, all others fine: still nothing was copied.
  CHECK_THROWS_AS(load_state_dict(*model, modified([&](NamedTensors& sd) {
                    find(sd, "classifier.3.bias") = zeros({3});
                  })),
                  std::invalid_argument);
  CHECK(same_values(original, snapshot(*model)));
}

TEST_CASE("save_model / load_model round-trip through a safetensors file") {
  const auto dir = scratch_dir("model");
  const std::string path = (dir / "large.safetensors").string();
  const auto source = mobilenet_v3_large(10, 8);
  save_model(path, *source, {{"epoch", "3"}});
  const SafetensorsFile file = load_safetensors(path);
  CHECK(keys(file.tensors) == keys(state_dict(*source)));  // torchvision's order on disk
  CHECK(file.metadata.at("epoch") == "3");
  const auto target = mobilenet_v3_large(10, 9);
  load_model(path, *target);
  CHECK(same_values(snapshot(*source), snapshot(*target)));

  // A file for another model: the error names the file and the keys.
  const auto small = mobilenet_v3_small(10);
  CHECK_THROWS_WITH_AS(load_model(path, *small),
                       doctest::Contains((path + ": load_state_dict").c_str()),
                       std::invalid_argument);
  std::filesystem::remove_all(dir);
}

TEST_CASE("checkpoints: model + Adam state restore a run exactly") {
  const auto dir = scratch_dir("checkpoint");
  const std::string path = (dir / "ckpt.safetensors").string();
  const LabeledBatch batch = small_batch();

  // Run A: two steps, checkpoint, a third step.
  const auto model_a = small_without_dropout(11);
  Adam adam_a(model_a->parameters(), AdamOptions{});
  train_step(*model_a, adam_a, batch);
  train_step(*model_a, adam_a, batch);
  save_checkpoint(path, *model_a, adam_a, {{"step", "2"}});
  train_step(*model_a, adam_a, batch);

  // Run B: a fresh model and optimizer restored from the checkpoint, one step.
  const auto model_b = small_without_dropout(12);
  Adam adam_b(model_b->parameters(), AdamOptions{});
  const SafetensorsMetadata metadata = load_checkpoint(path, *model_b, adam_b);
  CHECK(metadata.at("step") == "2");
  train_step(*model_b, adam_b, batch);
  CHECK(same_values(snapshot(*model_a), snapshot(*model_b)));

  // The checkpoint's model part also loads alone (load_model skips "optimizer.").
  const SafetensorsFile file = load_safetensors(path);
  CHECK(file.contains("optimizer.state.0.exp_avg"));
  const auto model_c = mobilenet_v3_small(10, 13);
  load_model(path, *model_c);

  // A checkpoint of another optimizer kind is refused, and nothing changes.
  const NamedTensors before = snapshot(*model_c);
  Sgd sgd(model_c->parameters(), SgdOptions{0.1, 0.9});
  CHECK_THROWS_WITH_AS(load_checkpoint(path, *model_c, sgd),
                       doctest::Contains((path + ": SGD").c_str()), std::invalid_argument);
  CHECK(same_values(before, snapshot(*model_c)));
  std::filesystem::remove_all(dir);
}
