// The parity step: weights and batch in, logits, loss, gradients and
// buffers out (see parity.h).
#include "train/parity.h"

#include <stdexcept>

#include "layers/loss.h"
#include "models/mobilenet_v3.h"
#include "models/state_dict.h"
#include "tensor/device.h"
#include "tensor/safetensors.h"

namespace b3 {

namespace {

// The floating dtype a weights file is stored in (its first floating tensor's).
DType weights_dtype(const NamedTensors& weights) {
  for (const auto& [name, tensor] : weights)
    if (is_floating(tensor.dtype())) return tensor.dtype();
  return DType::f32;
}

}  // namespace

ParityResult run_parity_step(const ParityConfig& config) {
  if (config.device == "cuda") {
    require_device_available(Device::cuda(0), "b3 parity --device cuda");
    throw std::runtime_error(
        "b3 parity --device cuda: the model's layers have no CUDA path in this build yet; "
        "run with --device cpu");
  }
  const DType dtype = config.dtype == "f64" ? DType::f64 : DType::f32;

  MobileNetV3Options options;
  options.arch = parse_mobilenet_v3_arch(config.model);
  options.num_classes = config.classes;
  options.dropout = 0.0;  // parity compares deterministic computations
  MobileNetV3 model(options);

  // Load in the file's own dtype (strict), then convert: F32 and F64 weight
  // files both work with either --dtype.
  const NamedTensors weights = read_weights_file(config.weights);
  model.to(weights_dtype(weights));
  try {
    load_state_dict(model, weights);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(config.weights + ": " + e.what());
  }
  model.to(dtype);

  const SafetensorsFile batch = load_safetensors(config.input);
  for (const char* name : {"input", "target"}) {
    if (!batch.contains(name)) {
      throw std::invalid_argument(config.input + ": no tensor named '" + name +
                                  "' (expected 'input' [N, 3, H, W] and 'target' [N])");
    }
  }
  const Tensor& input = batch.at("input");
  const Tensor& target = batch.at("target");
  if (input.dim() != 4 || input.size(1) != 3 || !is_floating(input.dtype())) {
    throw std::invalid_argument(
        config.input + ": 'input' must be a floating [N, 3, H, W] tensor, got " + input.str());
  }
  if (target.dim() != 1 || target.size(0) != input.size(0) ||
      (target.dtype() != DType::i64 && target.dtype() != DType::i32)) {
    throw std::invalid_argument(config.input + ": 'target' must be I64 or I32 [" +
                                std::to_string(input.size(0)) + "], got " + target.str());
  }
  const MemoryFormat format =
      config.channels_last ? MemoryFormat::channels_last : MemoryFormat::contiguous;
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
  save_safetensors(config.out, out,
                   {{"producer", "b3 parity"},
                    {"model", config.model},
                    {"classes", std::to_string(config.classes)},
                    {"dtype", config.dtype},
                    {"memory_format", memory_format_name(format)},
                    {"weights", config.weights},
                    {"input", config.input}});
  ParityResult result;
  result.model_description = model.describe();
  result.input_shape = x.shape();
  result.dtype = dtype;
  result.format = format;
  result.loss = loss.item();
  result.tensors_written = out.size();
  return result;
}

}  // namespace b3
