// The analytic step cost (experiment/step_cost.h): FLOPs of single layers by
// hand, the forward MACs of MobileNetV3-Large against the published figure,
// parameter counts against the real model, linearity in the batch, the fused
// floor below the unfused one, and argument errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>

#include "experiment/step_cost.h"
#include "models/mobilenet_v3.h"

using namespace b3;

namespace {

StepCostOptions large_options(int64_t image_size, int64_t batch, int64_t classes = 1000) {
  StepCostOptions o;
  o.model.arch = MobileNetV3Arch::large;
  o.model.num_classes = classes;
  o.image_size = image_size;
  o.batch_size = batch;
  return o;
}

const LayerCost& find_layer(const StepCost& cost, const std::string& name) {
  const auto it = std::find_if(cost.layers.begin(), cost.layers.end(),
                               [&](const LayerCost& l) { return l.name == name; });
  REQUIRE_MESSAGE(it != cost.layers.end(), "no layer " << name);
  return *it;
}

// Forward FLOPs of the convolutions and linear layers (the multiply-adds
// that MAC counts cover, biases included).
double forward_conv_linear_flops(const StepCost& cost) {
  double flops = 0.0;
  for (const LayerCost& l : cost.layers) {
    const bool se_conv = l.category == CostCategory::squeeze_excite &&
                         (l.name.ends_with(".fc1") || l.name.ends_with(".fc2"));
    if (l.category == CostCategory::stem || l.category == CostCategory::conv1x1 ||
        l.category == CostCategory::depthwise || l.category == CostCategory::linear || se_conv) {
      flops += l.forward.flops;
    }
  }
  return flops;
}

}  // namespace

// All counts below are exact integers well under 2^53, so doubles hold them
// exactly and the checks are ==.
TEST_CASE("step_cost: a 1x1 convolution, by hand") {
  const StepCost cost = mobilenet_v3_step_cost(large_options(224, 2));
  // Large, features.2: expand 16 -> 64 at 112x112 (stem 224 -> 112; block 1 keeps 112).
  const LayerCost& expand = find_layer(cost, "features.2.block.0.0");
  CHECK(expand.category == CostCategory::conv1x1);
  const double n = 2, hw = 112.0 * 112.0, cin = 16, cout = 64;
  CHECK(expand.forward.flops == 2 * n * hw * cout * cin);
  CHECK(expand.backward.flops == 2 * (2 * n * hw * cout * cin));  // data + weight
  // f32: reads x and W, writes y; backward reads dy, x, W, writes dx, dW.
  const double x = n * cin * hw * 4, y = n * cout * hw * 4, w = cout * cin * 4;
  CHECK(expand.forward.bytes == x + w + y);
  CHECK(expand.backward.bytes == y + x + w + x + w);
  CHECK(expand.forward.fused_bytes == expand.forward.bytes);
}

TEST_CASE("step_cost: a depthwise convolution and the stem, by hand") {
  const StepCost cost = mobilenet_v3_step_cost(large_options(224, 3));
  // features.2 depthwise: 64 channels, 3x3, stride 2: 112 -> 56.
  const LayerCost& dw = find_layer(cost, "features.2.block.1.0");
  CHECK(dw.category == CostCategory::depthwise);
  CHECK(dw.forward.flops == 2.0 * 3 * 56 * 56 * 64 * 1 * 3 * 3);
  CHECK(dw.backward.flops == 2 * dw.forward.flops);
  // The stem: 3 -> 16, 3x3 stride 2: 224 -> 112; no gradient for the images.
  const LayerCost& stem = find_layer(cost, "features.0.0");
  CHECK(stem.category == CostCategory::stem);
  CHECK(stem.forward.flops == 2.0 * 3 * 112 * 112 * 16 * 3 * 3 * 3);
  CHECK(stem.backward.flops == stem.forward.flops);
  // Linear(960, 1280) with bias at batch 3: 2*N*in*out + N*out.
  const LayerCost& fc = find_layer(cost, "classifier.0");
  CHECK(fc.forward.flops == 2.0 * 3 * 960 * 1280 + 3.0 * 1280);
}

TEST_CASE("step_cost: MobileNetV3-Large forward at 224 is ~0.44 GFLOP (0.22 GMACs)") {
  // Source: torchvision's documentation of MobileNet_V3_Large_Weights lists
  // "GFLOPS 0.22" for mobilenet_v3_large at 224x224, 1000 classes, batch 1;
  // torchvision counts multiply-adds (so 0.22 GMACs), and the MobileNetV3
  // paper (Howard et al. 2019, Table 3) gives 219 M MAdds. At 2 FLOPs per
  // MAC that is 0.438 GFLOP; the tolerance is torchvision's rounding to two
  // digits (0.215 to 0.225 GMACs).
  const StepCost cost = mobilenet_v3_step_cost(large_options(224, 1));
  const double gmacs = forward_conv_linear_flops(cost) / 2e9;
  CAPTURE(gmacs);
  CHECK(gmacs > 0.215);
  CHECK(gmacs < 0.225);
  // The elementwise ops add a few percent on top, no more.
  CHECK(cost.forward().flops > forward_conv_linear_flops(cost));
  CHECK(cost.forward().flops < 1.1 * forward_conv_linear_flops(cost));
  // Backward: twice the forward's multiply-adds, less the stem's data gradient.
  CHECK(cost.backward().flops > 1.9 * forward_conv_linear_flops(cost));
  CHECK(cost.backward().flops < 2.3 * cost.forward().flops);
}

TEST_CASE("step_cost: parameters equal the real model's") {
  for (const MobileNetV3Arch arch : {MobileNetV3Arch::large, MobileNetV3Arch::small}) {
    for (const int64_t classes : {10, 1000}) {
      for (const auto& entry :
           std::vector<std::pair<double, int64_t>>{{1.0, 8}, {0.75, 8}, {1.0, 32}, {1.0, 1}}) {
        const auto& width = entry.first;     // not structured bindings: CAPTURE's
        const auto& divisor = entry.second;  // lambda cannot take them (clang 14)
        StepCostOptions o;
        o.model.arch = arch;
        o.model.num_classes = classes;
        o.model.width_mult = width;
        o.model.channel_divisor = divisor;
        o.image_size = 32;
        CAPTURE(classes);
        CAPTURE(width);
        CAPTURE(divisor);
        const StepCost cost = mobilenet_v3_step_cost(o);
        CHECK(cost.parameters == MobileNetV3(o.model).parameter_count());
      }
    }
  }
  CHECK(mobilenet_v3_step_cost(large_options(224, 1)).parameters == 5483032);
}

TEST_CASE("step_cost: activation costs scale linearly with the batch and parameter costs do not") {
  const StepCost one = mobilenet_v3_step_cost(large_options(32, 1, 10));
  const StepCost many = mobilenet_v3_step_cost(large_options(32, 129, 10));
  // FLOPs: every op but the update is per image. Relative 1e-12: the sums
  // are of a few hundred terms, each exact or rounded at 1e-16.
  CHECK(many.forward().flops == doctest::Approx(129 * one.forward().flops).epsilon(1e-12));
  CHECK(many.backward().flops == doctest::Approx(129 * one.backward().flops).epsilon(1e-12));
  CHECK(many.update().flops == one.update().flops);
  // Bytes: affine in the batch, bytes(N) = fixed + N * per_image; check with three batches.
  const StepCost two = mobilenet_v3_step_cost(large_options(32, 2, 10));
  const double per_image = two.total().bytes - one.total().bytes;
  const double fixed = one.total().bytes - per_image;
  CHECK(per_image > 0);
  CHECK(fixed > 0);  // weights, gradients, optimizer state
  CHECK(many.total().bytes == doctest::Approx(fixed + 129 * per_image).epsilon(1e-12));
  // The update touches 5 x 4 bytes per parameter (SGD momentum), 7 x 4 for Adam.
  CHECK(one.update().bytes == 20.0 * static_cast<double>(one.parameters));
  StepCostOptions adam = large_options(32, 1, 10);
  adam.optimizer = StepOptimizerKind::adam;
  CHECK(mobilenet_v3_step_cost(adam).update().bytes == 28.0 * static_cast<double>(one.parameters));
}

TEST_CASE("step_cost: the fused floor is below the unfused one and f16 halves them") {
  const StepCost cost = mobilenet_v3_step_cost(large_options(224, 16, 10));
  CHECK(cost.total().fused_bytes < cost.total().bytes);
  CHECK(cost.forward().fused_bytes < cost.forward().bytes);
  CHECK(cost.backward().fused_bytes < cost.backward().bytes);
  CHECK(cost.fused_arithmetic_intensity() > cost.arithmetic_intensity());
  for (const LayerCost& l : cost.layers) {
    CAPTURE(l.name);
    CHECK(l.forward.fused_bytes <= l.forward.bytes);
    CHECK(l.backward.fused_bytes <= l.backward.bytes);
  }
  // BatchNorm + Hardswish, by hand (features.16, 960 channels at 7x7, f32):
  // unfused BN reads x, writes y; Hardswish reads y, writes z. Fused: x in, z out.
  const double e = 16.0 * 960 * 7 * 7 * 4;
  const LayerCost& bn = find_layer(cost, "features.16.1");
  const LayerCost& hs = find_layer(cost, "features.16.2");
  CHECK(hs.forward.bytes == 2 * e);
  CHECK(hs.forward.fused_bytes == e);
  CHECK(bn.forward.bytes - bn.forward.fused_bytes == e);
  CHECK(bn.backward.bytes - bn.backward.fused_bytes == e);
  CHECK(hs.backward.bytes - hs.backward.fused_bytes == 2 * e);
  // A residual add (features.3: 24 channels at 56x56): 3 passes -> 1 each way.
  const double r = 16.0 * 24 * 56 * 56 * 4;
  const LayerCost& add = find_layer(cost, "features.3.add");
  CHECK(add.forward.bytes == 3 * r);
  CHECK(add.forward.fused_bytes == r);
  CHECK(add.backward.fused_bytes == r);
  // The categories sum to the total.
  double sum = 0.0;
  for (const LayerCost& row : cost.by_category()) sum += row.total().bytes;
  CHECK(sum == doctest::Approx(cost.total().bytes).epsilon(1e-12));

  // f16 activations: the activation traffic halves, weight traffic gains the casts.
  StepCostOptions half = large_options(224, 16, 10);
  half.activation_bytes = 2;
  const StepCost h = mobilenet_v3_step_cost(half);
  CHECK(h.total().flops == cost.total().flops);
  CHECK(h.total().bytes < 0.6 * cost.total().bytes);
  CHECK(h.total().bytes > 0.4 * cost.total().bytes);
}

TEST_CASE("step_cost: achieved rate against a bandwidth") {
  const StepCost cost = mobilenet_v3_step_cost(large_options(32, 8, 10));
  const double seconds = cost.total().bytes / 100e9;  // the floor at 100 GB/s
  const AchievedRate r = achieved_rate(cost, seconds, 200e9);
  CHECK(r.bytes_per_second == doctest::Approx(100e9).epsilon(1e-12));
  CHECK(r.fraction_of_bandwidth == doctest::Approx(0.5).epsilon(1e-12));
  CHECK(r.fused_fraction_of_bandwidth < r.fraction_of_bandwidth);
  CHECK(r.flops_per_second == doctest::Approx(cost.total().flops / seconds).epsilon(1e-12));
  CHECK(achieved_rate(cost, seconds, 0.0).fraction_of_bandwidth == 0.0);
  CHECK(measure_host_copy_bandwidth(1, int64_t{8} << 20, 2) > 1e8);  // any real machine: > 0.1 GB/s
}

TEST_CASE("step_cost: bad arguments throw with clear messages") {
  auto throws = [](StepCostOptions o, const char* message) {
    CHECK_THROWS_WITH_AS(mobilenet_v3_step_cost(o), doctest::Contains(message),
                         std::invalid_argument);
  };
  StepCostOptions o = large_options(224, 1);
  o.image_size = 0;
  throws(o, "image_size must be positive, got 0");
  o = large_options(224, -3);
  throws(o, "batch_size must be positive, got -3");
  o = large_options(224, 1);
  o.activation_bytes = 8;
  throws(o, "activation_bytes must be 4 (f32) or 2 (f16 mixed precision), got 8");
  o = large_options(224, 1, 0);
  throws(o, "num_classes must be positive, got 0");
  o = large_options(224, 1);
  o.model.width_mult = 0.0;
  throws(o, "width_mult must be positive");
  o = large_options(224, 1);
  o.model.channel_divisor = 0;
  throws(o, "channel_divisor must be positive, got 0");
  const StepCost cost = mobilenet_v3_step_cost(large_options(32, 1));
  CHECK_THROWS_WITH_AS(achieved_rate(cost, 0.0, 1e9),
                       doctest::Contains("seconds_per_step must be positive"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(achieved_rate(cost, 1.0, -1.0), doctest::Contains("bandwidth must be"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(measure_host_copy_bandwidth(0),
                       doctest::Contains("threads must be positive"), std::invalid_argument);
}
