// `b3 parity`: one training-mode forward, cross-entropy and backward of a
// MobileNetV3 on given weights and a given batch, with every result written to
// a safetensors file, so that any reference (PyTorch, another framework) can
// be checked against b3 without writing C++:
//
//   b3 parity --model mobilenet_v3_large --classes 10 --weights W.safetensors
//             --input X.safetensors --out Y.safetensors [--dtype f32|f64] [--device cpu|cuda]
//
// W: the model's state_dict (torchvision's keys; F32 or F64), loaded strictly.
// X: "input" [N, 3, H, W] (floating, logical NCHW order) and "target" [N] (I64 or I32).
// Y: "logits", "loss", "grad.<parameter name>" for every parameter, and
//    "state.<buffer name>" for every buffer after the forward, in --dtype.
// Dropout is disabled (p = 0); BatchNorm runs in training mode (batch
// statistics, running statistics updated), as torchvision's model.train().
// --channels-last lays the input out NHWC, so every layer runs its NHWC path;
// the results must not change beyond rounding.
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>

#include "cli/commands.h"
#include "layers/loss.h"
#include "models/mobilenet_v3.h"
#include "models/state_dict.h"
#include "tensor/device.h"
#include "tensor/safetensors.h"

namespace b3::cli {

namespace {

struct ParityArgs {
  std::string model = "mobilenet_v3_large";
  int64_t classes = 10;
  std::string weights;
  std::string input;
  std::string out;
  std::string dtype = "f32";
  std::string device = "cpu";
  bool channels_last = false;
};

// The floating dtype a weights file is stored in (its first floating tensor's).
DType weights_dtype(const SafetensorsFile& file) {
  for (const auto& [name, tensor] : file.tensors)
    if (is_floating(tensor.dtype())) return tensor.dtype();
  return DType::f32;
}

void run_parity(const ParityArgs& args) {
  if (args.device == "cuda") {
    require_device_available(Device::cuda(0), "b3 parity --device cuda");
    throw std::runtime_error(
        "b3 parity --device cuda: the model's layers have no CUDA path in this build yet; "
        "run with --device cpu");
  }
  const DType dtype = args.dtype == "f64" ? DType::f64 : DType::f32;

  MobileNetV3Options options;
  options.arch = parse_mobilenet_v3_arch(args.model);
  options.num_classes = args.classes;
  options.dropout = 0.0;  // parity compares deterministic computations
  MobileNetV3 model(options);

  // Load in the file's own dtype (strict), then convert: F32 and F64 weight
  // files both work with either --dtype.
  const SafetensorsFile weights = load_safetensors(args.weights);
  model.to(weights_dtype(weights));
  try {
    load_state_dict(model, weights.tensors);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(args.weights + ": " + e.what());
  }
  model.to(dtype);

  const SafetensorsFile batch = load_safetensors(args.input);
  for (const char* name : {"input", "target"}) {
    if (!batch.contains(name)) {
      throw std::invalid_argument(args.input + ": no tensor named '" + name +
                                  "' (expected 'input' [N, 3, H, W] and 'target' [N])");
    }
  }
  const Tensor& input = batch.at("input");
  const Tensor& target = batch.at("target");
  if (input.dim() != 4 || input.size(1) != 3 || !is_floating(input.dtype())) {
    throw std::invalid_argument(
        args.input + ": 'input' must be a floating [N, 3, H, W] tensor, got " + input.str());
  }
  if (target.dim() != 1 || target.size(0) != input.size(0) ||
      (target.dtype() != DType::i64 && target.dtype() != DType::i32)) {
    throw std::invalid_argument(args.input + ": 'target' must be I64 or I32 [" +
                                std::to_string(input.size(0)) + "], got " + target.str());
  }
  const MemoryFormat format =
      args.channels_last ? MemoryFormat::channels_last : MemoryFormat::contiguous;
  Tensor x = empty(input.shape(), TensorOptions(dtype).with_format(format));
  x.copy_(input);

  model.train();
  model.zero_grad();
  const Tensor logits = model.forward(x);
  const Tensor loss = cross_entropy(logits, target);
  loss.backward();

  NamedTensors out{{"logits", logits.detach()}, {"loss", loss.detach()}};
  for (const auto& [name, parameter] : model.named_parameters()) {
    // A parameter the loss does not reach has gradient zero (PyTorch: None).
    const Tensor grad = parameter.grad();
    out.emplace_back("grad." + name, grad.defined() ? grad : zeros_like(parameter));
  }
  for (const auto& [name, buffer] : model.named_buffers())
    out.emplace_back("state." + name, buffer);
  save_safetensors(args.out, out,
                   {{"producer", "b3 parity"},
                    {"model", args.model},
                    {"classes", std::to_string(args.classes)},
                    {"dtype", args.dtype},
                    {"memory_format", memory_format_name(format)},
                    {"weights", args.weights},
                    {"input", args.input}});
  std::printf("b3 parity: %s, input %s %s %s: loss %.17g; wrote %zu tensors to %s\n",
              model.describe().c_str(), shape_str(x.shape()).c_str(), dtype_name(dtype),
              memory_format_name(format), loss.item(), out.size(), args.out.c_str());
}

}  // namespace

void register_parity_command(CLI::App& app) {
  auto args = std::make_shared<ParityArgs>();
  CLI::App* cmd = app.add_subcommand(
      "parity",
      "one training-mode forward + cross-entropy + backward on given weights and batch; "
      "writes logits, loss, grad.<param> and state.<buffer> to a safetensors file");
  cmd->add_option("--model", args->model, "mobilenet_v3_large or mobilenet_v3_small")
      ->capture_default_str()
      ->check(CLI::IsMember({"mobilenet_v3_large", "mobilenet_v3_small"}));
  cmd->add_option("--classes", args->classes, "number of classes")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--weights", args->weights, "safetensors state_dict (torchvision's keys)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--input", args->input, "safetensors with 'input' [N,3,H,W] and 'target' [N]")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--out", args->out, "safetensors file to write the results to")->required();
  cmd->add_option("--dtype", args->dtype, "compute in f32 or f64")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f64"}));
  cmd->add_option("--device", args->device, "cpu or cuda")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_flag("--channels-last", args->channels_last,
                "lay the input out NHWC (channels_last) so every layer runs its NHWC path");
  cmd->callback([args] { run_parity(*args); });
}

}  // namespace b3::cli
