// Whole-model parity with PyTorch: torchvision's mobilenet_v3_large(num_classes=10)
// and mobilenet_v3_small, seeded weights written by PyTorch, one training-mode
// forward (dropout 0), cross-entropy and backward. Compared: logits, loss,
// every parameter gradient and every BatchNorm buffer after the forward, for
// b3 in f64 and f32, with NCHW and channels_last inputs, at batch 4 x 64x64,
// batch 2 x 224x224 and batch 3 x 96x96; and `b3 parity` (the command line)
// on the same files.
//
// Errors are relative_error() (tests/support/fixtures.h): ||b3 - torch|| /
// ||torch|| with an absolute floor of 1e-5 per element, which matters for the
// gradients that vanish in exact arithmetic (a per-channel shift that a later
// training-mode BatchNorm removes, e.g. the bias of the BatchNorm ending a
// block without residual): there both frameworks hold only rounding noise.
//
// Tolerances:
//  - f64 against PyTorch f64: logits, loss and buffers below 1e-12 (double
//    rounding through ~60 layers; measured <= 5e-15); gradients below 1e-7,
//    the bar. Measured: <= 3.3e-8, all of it in gradients through a
//    squeeze-excitation, from PyTorch's f64 hardsigmoid backward multiplying
//    by the float constant 1.0f/6.0f (see test_parity_layers.cpp, which pins
//    this down); everything else agrees to ~1e-14.
//  - f32 against PyTorch f64 (the exact reference): logits and loss below
//    1e-5 (PyTorch's own f32 error is ~1e-6), buffers below 1e-6 (a
//    momentum-0.01 blend of f32 batch statistics; PyTorch's own ~6e-8), and
//    every gradient below max(1e-4, 4 x the worst f32-vs-f64 gradient error
//    PyTorch itself makes on the same configuration).
//    Why the bar is model-wide, not per tensor: f32 gradients of a network of
//    ReLU/Hardswish kinks differ from f64 by chance, not only by rounding.
//    When an activation input lies within f32 rounding of a kink (|x| ~ 1e-6;
//    among millions of activation inputs at 224x224 a handful are that close
//    on a typical step), f32 and f64 take different branches for that element, and every gradient
//    before it moves by ~|g_element| / ||g||, about 1e-3. Measured: in b3 f32 at
//    mobilenet_v3_large batch 2, 224x224, one input of features.5.block.0's
//    ReLU is -6.8e-7 in f64 and +5.2e-7 in f32, which shifts the gradients of
//    features.0-5 by up to 3.8e-3; PyTorch's f32 run escapes that element but
//    meets others (its own worst: 1.9e-3, and 8e-4 at batch 3, 96x96, as the
//    issue measured). Which tensors a flip hits is luck, so the bar is "a few
//    times PyTorch's own worst"; the f64 comparison above (no flips at 1e-16)
//    is the strict test of the formulas, and test_parity_layers checks f32
//    accuracy layer by layer at full size, where there are no kinks.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "layers/loss.h"
#include "models/mobilenet_v3.h"
#include "models/state_dict.h"
#include "tensor/device.h"
#include "tensor/random.h"
#include "tests/support/fixtures.h"
#include "tests/support/reference.h"

using namespace b3;

namespace {

constexpr double kF64GradientTolerance = 1e-7;
constexpr double kF64Tolerance = 1e-12;
constexpr double kF32LogitsTolerance = 1e-5;
constexpr double kF32StateTolerance = 1e-6;
constexpr double kF32GradientFloor = 1e-4;
constexpr double kF32GradientFactor = 4.0;  // times PyTorch's own worst, see the top

struct Config {
  const char* arch;
  int64_t batch;
  int64_t size;
  std::string name() const {
    return std::string(arch) + "_b" + std::to_string(batch) + "_" + std::to_string(size);
  }
};

std::shared_ptr<MobileNetV3> make_model(const std::string& arch) {
  MobileNetV3Options options;
  options.arch = parse_mobilenet_v3_arch(arch);
  options.num_classes = 10;
  options.dropout = 0.0;  // the fixtures use dropout 0
  return std::make_shared<MobileNetV3>(options);
}

// What `b3 parity` computes, through the C++ API: one training-mode forward,
// cross-entropy and backward; logits, loss, grad.<param>, state.<buffer>.
NamedTensors training_step_outputs(const Config& config, DType dtype, MemoryFormat format) {
  const auto model = make_model(config.arch);
  load_state_dict(*model, test::load_fixture(config.name() + ".weights.safetensors").tensors);
  model->to(dtype);
  model->train();
  const SafetensorsFile batch = test::load_fixture(config.name() + ".input.safetensors");
  Tensor x = empty(batch.at("input").shape(), TensorOptions(dtype).with_format(format));
  x.copy_(batch.at("input"));
  const Tensor logits = model->forward(x);
  const Tensor loss = cross_entropy(logits, batch.at("target"));
  loss.backward();
  NamedTensors out{{"logits", logits.detach()}, {"loss", loss.detach()}};
  for (const auto& [name, p] : model->named_parameters())
    out.emplace_back("grad." + name, p.grad());
  for (const auto& [name, b] : model->named_buffers()) out.emplace_back("state." + name, b);
  return out;
}

// Checks every output against PyTorch in f64 with the tolerances above;
// returns a summary of the worst errors.
std::string check_outputs(const NamedTensors& outputs, const std::string& config_name, DType dtype,
                          const std::string& what) {
  const SafetensorsFile expected64 = test::load_fixture(config_name + ".expected_f64.safetensors");
  const SafetensorsFile expected32 = test::load_fixture(config_name + ".expected_f32.safetensors");
  SafetensorsFile actual;
  actual.tensors = outputs;
  actual.source = what;
  CHECK(outputs.size() == expected64.tensors.size());

  // PyTorch's own worst f32 gradient error in this configuration sets the f32 bar.
  double torch_worst_gradient = 0;
  std::string torch_worst_name;
  for (const auto& [key, reference] : expected64.tensors) {
    if (key.rfind("grad.", 0) != 0) continue;
    const double torch_own = test::relative_error(expected32.at(key), reference);
    if (torch_own > torch_worst_gradient) torch_worst_gradient = torch_own, torch_worst_name = key;
  }
  const double f32_gradient_tolerance =
      std::max(kF32GradientFloor, kF32GradientFactor * torch_worst_gradient);

  double worst_logits = 0, worst_gradient = 0, worst_state = 0;
  std::string worst_gradient_name;
  for (const auto& entry : expected64.tensors) {
    const auto& key = entry.first;         // not structured bindings: CAPTURE's
    const auto& reference = entry.second;  // lambda cannot take them (clang 14)
    CAPTURE(what);
    CAPTURE(key);
    REQUIRE(actual.contains(key));
    const Tensor& result = actual.at(key);
    REQUIRE(result.defined());
    if (!is_floating(reference.dtype())) {  // num_batches_tracked
      CHECK(result.to_doubles() == reference.to_doubles());
      continue;
    }
    CHECK(result.dtype() == dtype);
    const double error = test::relative_error(result, reference);
    CAPTURE(error);
    CAPTURE(test::relative_error(expected32.at(key), reference));  // PyTorch's own f32 error
    const bool gradient = key.rfind("grad.", 0) == 0;
    const bool state = key.rfind("state.", 0) == 0;
    if (gradient) {
      if (error > worst_gradient) worst_gradient = error, worst_gradient_name = key;
    } else if (state) {
      worst_state = std::max(worst_state, error);
    } else {
      worst_logits = std::max(worst_logits, error);
    }
    if (dtype == DType::f64) {
      CHECK(error < (gradient ? kF64GradientTolerance : kF64Tolerance));
    } else if (gradient) {
      CHECK(error < f32_gradient_tolerance);
    } else {
      CHECK(error < (state ? kF32StateTolerance : kF32LogitsTolerance));
    }
  }
  std::ostringstream summary;
  summary << what << ": logits/loss " << worst_logits << ", buffers " << worst_state
          << ", worst gradient " << worst_gradient << " (" << worst_gradient_name << ")";
  if (dtype == DType::f32) {
    summary << "; PyTorch's own f32 worst gradient " << torch_worst_gradient << " ("
            << torch_worst_name << ")";
  }
  return summary.str();
}

void check_config(const Config& config, DType dtype, MemoryFormat format) {
  const std::string what =
      config.name() + " " + dtype_name(dtype) + " " + memory_format_name(format);
  MESSAGE(check_outputs(training_step_outputs(config, dtype, format), config.name(), dtype, what));
}

// A path in single quotes for the shell (built with append: GCC 12 warns
// falsely, -Wrestrict, on "'" + string + "'").
std::string quoted(const std::filesystem::path& p) {
  std::string out(1, '\'');
  out.append(p.string()).push_back('\'');
  return out;
}

// Runs `command`, returns (exit status, what it printed).
std::pair<int, std::string> run_capturing(const std::string& command) {
  const std::filesystem::path log =
      std::filesystem::temp_directory_path() / ("b3-parity-" + std::to_string(::getpid()) + ".log");
  const int status = test::run_command(command + " >" + quoted(log) + " 2>&1");
  std::ifstream in(log);
  std::ostringstream text;
  text << in.rdbuf();
  std::filesystem::remove(log);
  return {status, text.str()};
}

std::filesystem::path b3_binary() {
  const char* build_dir = std::getenv("B3_BUILD_DIR");
  REQUIRE_MESSAGE(build_dir != nullptr, "B3_BUILD_DIR is not set: run this test through ctest");
  const std::filesystem::path b3 = std::filesystem::path(build_dir) / "b3";
  REQUIRE_MESSAGE(std::filesystem::exists(b3), "the b3 command line is not built ("
                                                   << b3.string() << "): build the b3 target too");
  return b3;
}

}  // namespace

TEST_CASE("parity model: torchvision's weight files load strictly, keys in state_dict order") {
  const std::vector<Config> configs{{"mobilenet_v3_large", 4, 64}, {"mobilenet_v3_small", 4, 64}};
  for (const Config& config : configs) {
    CAPTURE(config.name());
    const SafetensorsFile weights = test::load_fixture(config.name() + ".weights.safetensors");
    const auto model = make_model(config.arch);
    std::vector<std::string> file_keys, model_keys;
    for (const auto& [name, t] : weights.tensors) file_keys.push_back(name);
    for (const auto& [name, t] : state_dict(*model)) model_keys.push_back(name);
    CHECK(file_keys == model_keys);  // PyTorch wrote model.state_dict() in its order
    load_state_dict(*model, weights.tensors);
    CHECK(test::relative_error(state_dict(*model)[0].second, weights.tensors[0].second) == 0.0);
  }
}

TEST_CASE(
    "parity model: mobilenet_v3_large batch 4 at 64x64, f64 and f32, NCHW and channels_last") {
  for (DType dtype : {DType::f64, DType::f32})
    for (MemoryFormat format : test::both_formats())
      check_config({"mobilenet_v3_large", 4, 64}, dtype, format);
}

TEST_CASE(
    "parity model: mobilenet_v3_small batch 4 at 64x64, f64 and f32, NCHW and channels_last") {
  for (DType dtype : {DType::f64, DType::f32})
    for (MemoryFormat format : test::both_formats())
      check_config({"mobilenet_v3_small", 4, 64}, dtype, format);
}

TEST_CASE(
    "parity model: mobilenet_v3_large batch 2 at 224x224, f64 and f32, NCHW and channels_last") {
  for (DType dtype : {DType::f64, DType::f32})
    for (MemoryFormat format : test::both_formats())
      check_config({"mobilenet_v3_large", 2, 224}, dtype, format);
}

TEST_CASE(
    "parity model: mobilenet_v3_small batch 2 at 224x224, f64 and f32, NCHW and channels_last") {
  for (DType dtype : {DType::f64, DType::f32})
    for (MemoryFormat format : test::both_formats())
      check_config({"mobilenet_v3_small", 2, 224}, dtype, format);
}

TEST_CASE(
    "parity model: b3 parity --dtype f64 and f32 on torchvision weights (large, batch 3, 96x96)") {
  const Config config{"mobilenet_v3_large", 3, 96};
  const std::filesystem::path dir = test::fixture_dir();
  const char* build_dir = std::getenv("B3_BUILD_DIR");
  REQUIRE_MESSAGE(build_dir != nullptr, "B3_BUILD_DIR is not set: run this test through ctest");
  const std::filesystem::path b3 = std::filesystem::path(build_dir) / "b3";
  REQUIRE_MESSAGE(std::filesystem::exists(b3), "the b3 command line is not built ("
                                                   << b3.string() << "): build the b3 target too");
  for (const std::string dtype : {"f64", "f32"}) {
    for (const bool channels_last : {false, true}) {
      const std::filesystem::path out =
          std::filesystem::temp_directory_path() /
          ("b3-parity-" + std::to_string(::getpid()) + "-" + dtype + ".safetensors");
      const std::string command =
          quoted(b3) + " parity --model " + config.arch + " --classes 10 --weights " +
          quoted(dir / (config.name() + ".weights.safetensors")) + " --input " +
          quoted(dir / (config.name() + ".input.safetensors")) + " --out " + quoted(out) +
          " --dtype " + dtype + (channels_last ? " --channels-last" : "");
      CAPTURE(command);
      REQUIRE(test::run_command(command) == 0);
      const SafetensorsFile result = load_safetensors(out.string());
      std::filesystem::remove(out);
      CHECK(result.metadata.at("producer") == "b3 parity");
      const std::string what = "b3 parity --dtype " + dtype +
                               (channels_last ? " --channels-last" : "") + " on " + config.name();
      MESSAGE(check_outputs(result.tensors, config.name(), dtype == "f64" ? DType::f64 : DType::f32,
                            what));
    }
  }
}

TEST_CASE(
    "parity model: b3 parity refuses a mismatched weights file, a bad input and --device cuda") {
  const std::filesystem::path dir = test::fixture_dir();
  const std::string b3 = quoted(b3_binary());
  const std::string large = "mobilenet_v3_large_b4_64", small = "mobilenet_v3_small_b4_64";
  const std::string out = quoted(std::filesystem::temp_directory_path() /
                                 ("b3-parity-" + std::to_string(::getpid()) + "-bad.safetensors"));
  auto args = [&](const std::string& model, const std::string& weights, const std::string& input) {
    return " parity --model " + model + " --classes 10 --weights " +
           quoted(dir / (weights + ".weights.safetensors")) + " --input " +
           quoted(dir / (input + ".safetensors")) + " --out " + out;
  };
  {  // Small's weights for Large: the strict load names the file and the keys.
    const auto run = run_capturing(b3 + args("mobilenet_v3_large", small, large + ".input"));
    const int status = run.first;
    const std::string& output = run.second;
    CAPTURE(output);
    CHECK(status == 1);
    CHECK(output.find(small + ".weights.safetensors: load_state_dict") != std::string::npos);
    CHECK(output.find("missing keys: ") != std::string::npos);
  }
  {  // A weights file given as the input: no 'input' tensor.
    const auto run = run_capturing(b3 + args("mobilenet_v3_large", large, large + ".weights"));
    const int status = run.first;
    const std::string& output = run.second;
    CAPTURE(output);
    CHECK(status == 1);
    CHECK(output.find("no tensor named 'input'") != std::string::npos);
  }
  {  // This build's layers are CPU only: --device cuda is a clear error, before any work.
    const auto run =
        run_capturing(b3 + args("mobilenet_v3_large", large, large + ".input") + " --device cuda");
    const int status = run.first;
    const std::string& output = run.second;
    CAPTURE(output);
    CHECK(status == 1);
    CHECK(output.find("b3 parity --device cuda") != std::string::npos);
    if (!built_with_cuda()) CHECK(output.find("built without CUDA") != std::string::npos);
  }
  CHECK_FALSE(std::filesystem::exists(out.substr(1, out.size() - 2)));  // nothing half-written
}

TEST_CASE(
    "parity model: weights saved by b3 load into torchvision (strict) and give the same logits") {
  test::skip_unless_torch_available();
  const std::filesystem::path tmp =
      std::filesystem::temp_directory_path() / ("b3-parity-reverse-" + std::to_string(::getpid()));
  std::filesystem::create_directories(tmp);
  for (const std::string arch : {"mobilenet_v3_large", "mobilenet_v3_small"}) {
    CAPTURE(arch);
    MobileNetV3Options options;
    options.arch = parse_mobilenet_v3_arch(arch);
    options.num_classes = 10;
    options.dropout = 0.0;
    options.seed = 21;
    MobileNetV3 model(options);
    Generator gen(22);
    const Tensor x = rand({2, 3, 64, 64}, gen);
    model.train();
    model.forward(x);  // running statistics move off their initial values
    model.eval();
    const Tensor logits = model.forward(x).detach();

    const std::filesystem::path weights = tmp / "weights.safetensors";
    const std::filesystem::path input = tmp / "input.safetensors";
    const std::filesystem::path out = tmp / "logits.safetensors";
    save_model(weights.string(), model);
    save_safetensors(input.string(), {{"input", x}});
    const auto run =
        run_capturing(test::python_executable() + " " +
                      quoted(test::fixture_detail::script_path()) + " --torchvision-forward " +
                      arch + " " + quoted(weights) + " " + quoted(input) + " " + quoted(out));
    const int status = run.first;
    const std::string& output = run.second;
    CAPTURE(output);
    REQUIRE(status == 0);
    // Eval-mode f32 forward, both sides: rounding only (as the f32 logits above).
    CHECK(test::relative_error(logits, load_safetensors(out.string()).at("logits")) < 1e-5);
  }
  std::filesystem::remove_all(tmp);
}
