// State dicts and checkpoints: a module's parameters and buffers as named
// tensors, in torchvision's order and with its keys, and their round trip
// through safetensors files.
//
//   state_dict(model)            for each module, depth first: its own
//                                parameters, then its own buffers, then its
//                                children (torch.nn.Module.state_dict's order),
//                                e.g. features.0.0.weight, features.0.1.weight,
//                                features.0.1.bias, features.0.1.running_mean, ...
//   load_state_dict(model, sd)   strict, as load_state_dict(strict=True): every
//                                key must be present, no extra key, each with
//                                the model tensor's shape and dtype. Values are
//                                copied into the model's existing tensors, so
//                                handles held elsewhere (optimizers) stay valid.
//
// A weights file holds exactly the state_dict keys, so a file saved from
// torchvision (torch.save(model.state_dict(), ...) or
// safetensors.torch.save_file(model.state_dict(), ...)) loads with no
// renaming, and the reverse. A checkpoint adds the optimizer's
// state under "optimizer." (optimizer keys "state.<index>.<name>" become
// "optimizer.state.<index>.<name>"); load_model reads the model part of either.
#pragma once

#include <string>

#include "layers/module.h"
#include "optim/optimizer.h"
#include "tensor/safetensors.h"

namespace b3 {

// The live tensors (not copies), keyed as torchvision's state_dict.
NamedTensors state_dict(const Module& module);

// Copies `state` into the module's tensors; throws std::invalid_argument naming
// the offending key(s) on missing or unexpected keys, or on a shape or dtype
// mismatch, before changing anything.
void load_state_dict(Module& module, const NamedTensors& state);

// The named tensors of a weights file: a .pth (torch.save's zip format, e.g.
// torchvision's pretrained weights; tensor/torch_file.h) or a safetensors
// file, told apart by their first bytes, whatever the file's name. A b3
// checkpoint's optimizer entries (kOptimizerPrefix) are left out.
NamedTensors read_weights_file(const std::string& path);

// The prefix of optimizer entries in a checkpoint.
inline constexpr const char* kOptimizerPrefix = "optimizer.";

// Model weights and buffers only (a torchvision-compatible weights file).
void save_model(const std::string& path, const Module& model,
                const SafetensorsMetadata& metadata = {});
// Loads the model part of a weights file (.pth or safetensors) or a
// checkpoint (strict).
void load_model(const std::string& path, Module& model);

// Model and optimizer state in one file, saved atomically.
void save_checkpoint(const std::string& path, const Module& model, const Optimizer& optimizer,
                     const SafetensorsMetadata& metadata = {});
// Restores both (strict for the model; the optimizer checks its own keys).
// Returns the file's metadata (e.g. the epoch the caller stored there).
SafetensorsMetadata load_checkpoint(const std::string& path, Module& model, Optimizer& optimizer);

}  // namespace b3
