// What every command that trains builds before its first step, written once
// so that `b3 train`, `b3 sweep`, `b3 bench-step`, `b3 layout`, `b3 maxbatch`
// and `b3 profile` cannot drift apart:
//
//   OptimizerConfig, make_optimizer()  --optimizer, --lr, --momentum and
//                                      --weight-decay as one optimizer over a
//                                      model's parameters
//   prepare_model()                    the model onto its device, its 4-D
//                                      weights in a memory format
//                                      (model.to(device), then
//                                      model.to(memory_format=...))
//   resolve_amp()                      --amp / --no-amp with the device's
//                                      default: on for cuda, off (and an
//                                      error when asked for) on the CPU
//
// Each command keeps its own defaults by the values it passes: the training
// run's Adam lr 5e-4, bench-step's SGD lr 0.01 momentum 0.9, the layout and
// memory probes' Adam with PyTorch's default lr 1e-3.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "layers/module.h"
#include "optim/optimizer.h"
#include "tensor/device.h"

namespace b3 {

struct OptimizerConfig {
  std::string name = "adam";  // adam | adamw | sgd
  double lr = 5e-4;
  double momentum = 0.9;  // sgd only
  double weight_decay = 0.0;
};

// The optimizer `config` names over `model`'s parameters that require
// gradients (frozen ones are left out) (Adam and AdamW with
// PyTorch's betas and eps, SGD without dampening or Nesterov). Throws
// std::invalid_argument naming --optimizer for an unknown name.
std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& config, const Module& model);

// Moves `model` to `device`, then lays its 4-D parameters and buffers out in
// `format` (for channels_last, cuDNN's NHWC kernels then read the weights
// without a copy). Commands call it for CUDA models; on the CPU they keep
// the weights as built (NCHW) and only lay out the input.
void prepare_model(Module& model, const Device& device, MemoryFormat format);

// Whether a run uses f16 mixed precision: `amp` when given, else on for a
// CUDA device and off on the CPU. Asking for it on the CPU throws
// std::invalid_argument ("<command>: --amp (f16 mixed precision) needs
// --device cuda ..."); `command` may be empty.
bool resolve_amp(std::optional<bool> amp, bool cuda, const std::string& command);

}  // namespace b3
