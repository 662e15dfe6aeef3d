// What the GPU paths of `b3 maxbatch`, `b3 profile` and `b3 layout` share:
//
//   Precision        --precision: "mixed" (the default on a GPU: f16 autocast,
//                    f32 master weights, dynamic loss scaling, as
//                    torch.cuda.amp) or "f32"; the CPU trains in f32 only
//   synchronize()    waits for the device's compute stream, so a host clock
//                    read after it measures finished work (nothing on a CPU)
//   prepare_model()  the model onto the GPU, convolution weights in
//                    channels_last for NHWC (model.to(device),
//                    model.to(memory_format=torch.channels_last))
//   DeviceTrainStep  one training step on the GPU: forward under autocast,
//                    cross-entropy, backward seeded with the loss scale,
//                    GradScaler step and update, Adam's fused CUDA update
//   is_out_of_memory()  whether an error is the device running out of memory
//
// DeviceTrainStep is local to the benchmarks because train/trainer.h's
// train_step() has no mixed-precision path yet; it uses only public APIs
// (AutocastGuard, cross_entropy, Tensor::backward(seed), GradScaler). Unlike
// train_step() it never reads the loss back, so steps queue on the device
// without a host synchronization; a caller that times steps synchronizes
// around the loop.
//
// Everything here compiles in a CPU-only build; the CUDA calls then throw
// "built without CUDA", and the commands never reach them because
// require_device_available() stops them first.
#pragma once

#include <exception>
#include <optional>
#include <string>

#include "data/batch_source.h"
#include "layers/module.h"
#include "optim/grad_scaler.h"
#include "optim/optimizer.h"
#include "tensor/device.h"
#include "tensor/tensor.h"

namespace b3::bench {

enum class Precision { f32, mixed };

// The --precision value for `device`: "" means mixed on a GPU and f32 on the
// CPU; "mixed" on the CPU is an error (the CPU has no f16 kernels).
Precision resolve_precision(const std::string& text, const Device& device,
                            const std::string& command);
// "f32" or "mixed f16" (short, for table cells and titles).
const char* precision_name(Precision precision);
// One sentence for a report's header.
std::string precision_description(Precision precision);

// Blocks until every piece of work queued on `device`'s compute stream has
// finished (and rethrows a failure of that work); nothing on the CPU.
void synchronize(const Device& device);

// Moves `model` to `device` and, for channels_last, lays its 4-D parameters
// and buffers out in channels_last too (so cuDNN's NHWC kernels read the
// weights with no copy).
void prepare_model(Module& model, const Device& device, MemoryFormat format);

// One training step on a CUDA device, in f32 or mixed precision. The model
// is put in training mode. The optimizer must hold the model's parameters,
// already on `device`.
class DeviceTrainStep {
 public:
  DeviceTrainStep(Module& model, Optimizer& optimizer, const Device& device, Precision precision);

  // zero_grad, forward, loss, backward, optimizer step. Returns the f32 loss
  // on the device, not read back (reading it would synchronize).
  Tensor operator()(const LabeledBatch& batch);

 private:
  Module& model_;
  Optimizer& optimizer_;
  Precision precision_;
  std::optional<GradScaler> scaler_;  // mixed precision only
};

// True for the caching allocator's "CUDA out of memory" error and for cuDNN's
// or cuBLAS's allocation failures.
bool is_out_of_memory(const std::exception& e);

}  // namespace b3::bench
