// MobileNetV3 as torchvision builds it: parameter counts, state_dict names
// and shapes, initialization statistics, output shapes, train/eval behaviour,
// channel options, and a whole-model gradcheck of MobileNetV3-Small.
#include <doctest/doctest.h>

#include <cmath>
#include <map>

#include "autograd/grad_mode.h"
#include "layers/batchnorm2d.h"
#include "layers/conv2d.h"
#include "models/mobilenet_v3.h"
#include "tensor/ops.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

std::map<std::string, Tensor> parameters_by_name(const Module& m) {
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : m.named_parameters()) out[name] = t;
  return out;
}

}  // namespace

TEST_CASE("mobilenet_v3: parameter counts equal torchvision's") {
  // torchvision 0.14: sum(p.numel() for p in model.parameters()), len(list(model.parameters())).
  CHECK(mobilenet_v3_large(10)->parameter_count() == 4214842);
  CHECK(mobilenet_v3_large(1000)->parameter_count() == 5483032);
  CHECK(mobilenet_v3_small(10)->parameter_count() == 1528106);
  CHECK(mobilenet_v3_small(1000)->parameter_count() == 2542856);
  CHECK(mobilenet_v3_large(10)->named_parameters().size() == 174);
  CHECK(mobilenet_v3_small(10)->named_parameters().size() == 142);
  // 312 / 244 state_dict entries = parameters + 3 buffers per BatchNorm.
  CHECK(mobilenet_v3_large(10)->named_buffers().size() == 312 - 174);
  CHECK(mobilenet_v3_small(10)->named_buffers().size() == 244 - 142);
}

TEST_CASE("mobilenet_v3: names and shapes are torchvision's state_dict keys") {
  const auto large = mobilenet_v3_large(10);
  const auto params = parameters_by_name(*large);
  const std::vector<std::pair<std::string, Shape>> expected{
      {"features.0.0.weight", {16, 3, 3, 3}},
      {"features.0.1.weight", {16}},
      {"features.1.block.0.0.weight", {16, 1, 3, 3}},
      {"features.1.block.1.0.weight", {16, 16, 1, 1}},
      {"features.4.block.1.0.weight", {72, 1, 5, 5}},
      {"features.4.block.2.fc1.weight", {24, 72, 1, 1}},
      {"features.4.block.2.fc1.bias", {24}},
      {"features.4.block.2.fc2.weight", {72, 24, 1, 1}},
      {"features.4.block.3.0.weight", {40, 72, 1, 1}},
      {"features.16.0.weight", {960, 160, 1, 1}},
      {"classifier.0.weight", {1280, 960}},
      {"classifier.0.bias", {1280}},
      {"classifier.3.weight", {10, 1280}},
      {"classifier.3.bias", {10}},
  };
  for (const auto& entry : expected) {
    const auto& name = entry.first;    // not structured bindings: CAPTURE's
    const auto& shape = entry.second;  // lambda cannot take them (clang 14)
    CAPTURE(name);
    REQUIRE(params.count(name) == 1);
    CHECK(params.at(name).shape() == shape);
  }
  CHECK(large->named_parameters().front().first == "features.0.0.weight");
  CHECK(large->named_parameters().back().first == "classifier.3.bias");
  std::vector<std::string> buffers;
  for (const auto& [name, t] : large->named_buffers()) buffers.push_back(name);
  CHECK(buffers[0] == "features.0.1.running_mean");
  CHECK(buffers[1] == "features.0.1.running_var");
  CHECK(buffers[2] == "features.0.1.num_batches_tracked");
  CHECK(buffers.back() == "features.16.1.num_batches_tracked");

  const auto small = parameters_by_name(*mobilenet_v3_small(10));
  CHECK(small.count("features.1.block.1.fc1.weight") ==
        1);  // Small's first block has SE, no expand
  CHECK(small.at("features.1.block.0.0.weight").shape() == Shape{16, 1, 3, 3});
  CHECK(small.at("classifier.0.weight").shape() == Shape{1024, 576});
}

TEST_CASE("mobilenet_v3: initialization follows torchvision") {
  const auto model = mobilenet_v3_large(10, 7);
  const auto params = parameters_by_name(*model);
  // Conv: kaiming normal, fan_out = Cout * k * k. Large tensors: the sample std
  // is within 5% of sqrt(2 / fan_out) (sampling error ~ 1/sqrt(2n) < 1%).
  const Tensor w = params.at("features.16.0.weight");  // [960, 160, 1, 1], n = 153600
  double sq = 0;
  for (double v : w.to_doubles()) sq += v * v;
  CHECK(std::sqrt(sq / static_cast<double>(w.numel())) ==
        doctest::Approx(std::sqrt(2.0 / 960.0)).epsilon(0.05));
  const Tensor fc = params.at("classifier.0.weight");  // N(0, 0.01), n = 1.2M
  sq = 0;
  for (double v : fc.to_doubles()) sq += v * v;
  CHECK(std::sqrt(sq / static_cast<double>(fc.numel())) == doctest::Approx(0.01).epsilon(0.02));
  for (double v : params.at("classifier.0.bias").to_doubles()) CHECK(v == 0.0);
  for (double v : params.at("features.4.block.2.fc1.bias").to_doubles()) CHECK(v == 0.0);
  for (double v : params.at("features.0.1.weight").to_doubles()) CHECK(v == 1.0);
  // Same seed, same weights; another seed, others.
  const auto twin = parameters_by_name(*mobilenet_v3_large(10, 7));
  const auto other = parameters_by_name(*mobilenet_v3_large(10, 8));
  CHECK(test::max_relative_error(twin.at("features.0.0.weight"),
                                 params.at("features.0.0.weight")) == 0.0);
  CHECK(test::max_relative_error(other.at("features.0.0.weight"),
                                 params.at("features.0.0.weight")) > 0.0);
}

TEST_CASE("mobilenet_v3: forward shapes, both formats, both architectures") {
  Generator gen(5);
  for (auto arch : {MobileNetV3Arch::large, MobileNetV3Arch::small}) {
    MobileNetV3Options options;
    options.arch = arch;
    options.num_classes = 10;
    MobileNetV3 model(options);
    for (MemoryFormat format : test::both_formats()) {
      const Tensor x = test::random_tensor({3, 3, 32, 32}, gen, DType::f32, format);
      const Tensor y = model(x);
      CHECK(y.shape() == Shape{3, 10});
      for (double v : y.to_doubles()) CHECK(std::isfinite(v));
    }
  }
}

TEST_CASE("mobilenet_v3: the memory format does not change the result") {
  Generator gen(6);
  MobileNetV3Options options;
  options.arch = MobileNetV3Arch::small;
  options.num_classes = 10;
  options.dropout = 0.0;
  MobileNetV3 model(options);
  model.eval();
  const Tensor x = test::random_tensor({2, 3, 32, 32}, gen, DType::f32);
  const Tensor a = model(x);
  const Tensor b = model(x.contiguous(MemoryFormat::channels_last));
  // Same math, different summation orders inside GEMMs: f32 rounding only.
  CHECK(test::max_relative_error(b, a) < 1e-4);
}

TEST_CASE("mobilenet_v3: the inference forward equals the recorded eval forward, bit for bit") {
  // Under NoGradGuard in evaluation mode every block normalizes, activates
  // and adds its residual in its convolutions' stores (Conv2dEpilogue); with
  // gradients on the same model runs the ops one by one. Both formats, both
  // architectures, after a training step moved the running statistics.
  for (MobileNetV3Arch arch : {MobileNetV3Arch::small, MobileNetV3Arch::large}) {
    for (MemoryFormat format : test::both_formats()) {
      CAPTURE(memory_format_name(format));
      Generator gen(8);
      MobileNetV3Options options;
      options.arch = arch;
      options.num_classes = 10;
      MobileNetV3 model(options);
      model.to(format);
      sum(model(test::random_tensor({4, 3, 32, 32}, gen, DType::f32, format))).backward();
      model.eval();
      const Tensor x = test::random_tensor({3, 3, 32, 32}, gen, DType::f32, format);
      const Tensor recorded = model(x);
      REQUIRE(recorded.requires_grad());
      NoGradGuard no_grad;
      const Tensor inferred = model(x);
      CHECK(test::max_relative_error(inferred, recorded) == 0.0);
    }
  }
}

TEST_CASE("mobilenet_v3: train and eval differ where they must") {
  Generator gen(7);
  MobileNetV3Options options;
  options.arch = MobileNetV3Arch::small;
  options.num_classes = 10;
  MobileNetV3 model(options);
  const Tensor x = test::random_tensor({4, 3, 32, 32}, gen, DType::f32);
  NoGradGuard no_grad;
  model.eval();
  const Tensor e1 = model(x), e2 = model(x);
  CHECK(test::max_relative_error(e1, e2) == 0.0);  // eval: deterministic, running stats
  model.train();
  const auto before = model.named_buffers();
  const double mean_before = before[0].second.to_doubles()[0];
  const Tensor t1 = model(x);
  CHECK(test::max_relative_error(t1, e1) > 1e-3);  // batch statistics + dropout
  const auto after = model.named_buffers();
  CHECK(after[0].second.to_doubles()[0] != mean_before);  // running_mean moved
  CHECK(after[2].second.item() == 1.0);                   // num_batches_tracked
}

TEST_CASE("mobilenet_v3: width multiplier and channel rounding options") {
  MobileNetV3Options options;
  options.num_classes = 10;
  options.width_mult = 0.5;
  CHECK(mobilenet_v3_config(options)[3].expanded_channels == 40);  // 72 * 0.5 = 36 -> 40
  options.width_mult = 1.0;
  options.channel_divisor = 1;
  auto rows = mobilenet_v3_config(options);
  CHECK(rows[7].expanded_channels == 200);
  options.channel_divisor = 32;
  rows = mobilenet_v3_config(options);
  for (const auto& row : rows) {
    CHECK(row.expanded_channels % 32 == 0);
    CHECK(row.out_channels % 32 == 0);
  }
  MobileNetV3 model(options);
  Generator gen(8);
  CHECK(model(test::random_tensor({2, 3, 32, 32}, gen, DType::f32)).shape() == Shape{2, 10});
  options.num_classes = 0;
  CHECK_THROWS_WITH_AS(MobileNetV3{options}, doctest::Contains("num_classes"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(parse_mobilenet_v3_arch("resnet50"),
                       doctest::Contains("unknown model 'resnet50'"), std::invalid_argument);
}

TEST_CASE("mobilenet_v3: bad input shape is refused") {
  const auto model = mobilenet_v3_small(10);
  CHECK_THROWS_WITH_AS(model->forward(zeros({2, 1, 32, 32})),
                       doctest::Contains("expected input [N, 3, H, W], got [2, 1, 32, 32]"),
                       std::invalid_argument);
}

TEST_CASE(
    "mobilenet_v3: whole-model gradcheck of Small in double (input and a sample of parameters)") {
  // Batch 2 at 32x32 in double, training mode (batch statistics), dropout off.
  // Every parameter tensor of every block is checked at a few random elements;
  // the input at a sample of pixels. ReLU/hardswish kinks are skipped and counted.
  MobileNetV3Options options;
  options.arch = MobileNetV3Arch::small;
  options.num_classes = 10;
  options.dropout = 0.0;
  options.seed = 3;
  MobileNetV3 model(options);
  model.to(DType::f64);
  Generator gen(9);
  Tensor x = test::random_tensor({2, 3, 32, 32}, gen, DType::f64);
  x.set_requires_grad(true);
  std::vector<Tensor> wrt{x};
  for (const auto& [name, p] : model.named_parameters()) wrt.push_back(p);
  GradcheckOptions gc;
  gc.max_points_per_tensor = 2;
  // A deep network in double: the relative error of a correct gradient stays
  // far below 1e-5; a wrong term anywhere shows as O(1e-2) or more.
  gc.tolerance = 1e-5;
  B3_CHECK_GRADCHECK(gradcheck([&] { return model(x); }, wrt, gc));
}

TEST_CASE("ConvNormActivation: declared children, a description that says what is fused") {
  Generator gen(3);
  const ConvNormActivation stem(3, 16, 3, 2, 1, Activation::hardswish, 1e-3, 0.01, gen);
  const auto children = stem.named_children();
  REQUIRE(children.size() == 3);
  CHECK(children[0].first == "0");
  CHECK(dynamic_cast<const Conv2d*>(children[0].second.get()) != nullptr);
  CHECK(children[1].first == "1");
  CHECK(dynamic_cast<const BatchNorm2d*>(children[1].second.get()) != nullptr);
  CHECK(children[2].first == "2");
  CHECK(children[2].second->describe() == "Hardswish");
  CHECK(stem.describe() == "Conv3x3 s2 3->16, BN+HS fused");

  const ConvNormActivation project(40, 24, 1, 1, 1, Activation::none, 1e-3, 0.01, gen);
  CHECK(project.named_children().size() == 2);  // no activation child
  CHECK(project.describe() == "Conv1x1 s1 40->24, BN");
  CHECK(project.activation_layer == nullptr);

  CHECK_THROWS_WITH_AS(ConvNormActivation(8, 8, 3, 1, 8, Activation::hardsigmoid, 1e-3, 0.01, gen),
                       doctest::Contains("none, relu or hardswish"), std::invalid_argument);
}
