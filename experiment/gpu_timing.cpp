// The GPU helpers of the benchmark commands (see gpu_timing.h).
#include "experiment/gpu_timing.h"

#include <stdexcept>

#include "layers/loss.h"
#include "tensor/autocast.h"
#include "tensor/cuda_stream.h"

namespace b3::bench {

Precision resolve_precision(const std::string& text, const Device& device,
                            const std::string& command) {
  if (text.empty()) return device.is_cuda() ? Precision::mixed : Precision::f32;
  if (text == "f32") return Precision::f32;
  if (text == "mixed") {
    if (!device.is_cuda()) {
      throw std::invalid_argument(
          command +
          ": --precision mixed needs --device cuda (mixed precision runs convolutions and GEMMs "
          "in f16 on Tensor Cores; the CPU has no f16 kernels and trains in f32)");
    }
    return Precision::mixed;
  }
  throw std::invalid_argument(command + ": --precision must be mixed or f32, got '" + text + "'");
}

const char* precision_name(Precision precision) {
  return precision == Precision::mixed ? "mixed f16" : "f32";
}

std::string precision_description(Precision precision) {
  if (precision == Precision::f32) return "f32 (weights, activations and gradients)";
  return "mixed f16 (autocast: f16 convolutions and GEMMs with f32 accumulation, f32 master "
         "weights, BatchNorm statistics and loss; dynamic loss scaling from 65536)";
}

void synchronize(const Device& device) {
  if (device.is_cuda()) cuda::synchronize(cuda::compute_stream(device.index));
}

void prepare_model(Module& model, const Device& device, MemoryFormat format) {
  model.to(device);
  if (format == MemoryFormat::channels_last) model.to(MemoryFormat::channels_last);
}

DeviceTrainStep::DeviceTrainStep(Module& model, Optimizer& optimizer, const Device& device,
                                 Precision precision)
    : model_(model), optimizer_(optimizer), precision_(precision) {
  if (!device.is_cuda()) {
    throw std::invalid_argument("DeviceTrainStep: needs a CUDA device, got " + device.str() +
                                " (the CPU trains with train_step() in train/trainer.h)");
  }
  if (precision_ == Precision::mixed) scaler_.emplace(device);
}

Tensor DeviceTrainStep::operator()(const LabeledBatch& batch) {
  model_.train();
  optimizer_.zero_grad();
  if (precision_ == Precision::f32) {
    const Tensor loss = cross_entropy(model_.forward(batch.images), batch.labels);
    loss.backward();
    optimizer_.step();
    return loss.detach();
  }
  // torch.cuda.amp: forward and loss under autocast, backward outside it.
  Tensor loss;
  {
    AutocastGuard autocast(DType::f16);
    loss = cross_entropy(model_.forward(batch.images), batch.labels);
  }
  loss.backward(scaler_->scale_seed());  // gradients of loss * scale
  scaler_->step(optimizer_);             // unscaled inside the update; skipped on inf/nan
  scaler_->update();
  return loss.detach();
}

bool is_out_of_memory(const std::exception& e) {
  const std::string what = e.what();
  for (const char* sign :
       {"out of memory", "OUT_OF_MEMORY", "ALLOC_FAILED", "resource allocation failed"}) {
    if (what.find(sign) != std::string::npos) return true;
  }
  return false;
}

}  // namespace b3::bench
