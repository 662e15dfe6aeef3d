// State dicts (torchvision's key order, strict loading by copy), weights
// files (.pth or safetensors) and safetensors checkpoints of a model and its
// optimizer.
#include "models/state_dict.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <stdexcept>

#include "autograd/grad_mode.h"
#include "tensor/printable_text.h"
#include "tensor/torch_file.h"

namespace b3 {

namespace {

// Appends `module`'s own parameters, then its own buffers, then each child's
// entries, recursively: torch.nn.Module.state_dict's order. Module lists a
// module's own tensors first in named_parameters()/named_buffers(), followed
// by its children's, so the own ones are the leading entries.
void collect_state(const Module& module, const std::string& prefix, NamedTensors& out) {
  const auto children = module.named_children();
  size_t child_parameters = 0, child_buffers = 0;
  for (const auto& [name, child] : children) {
    child_parameters += child->named_parameters().size();
    child_buffers += child->named_buffers().size();
  }
  const auto parameters = module.named_parameters();
  const auto buffers = module.named_buffers();
  for (size_t i = 0; i + child_parameters < parameters.size(); ++i)
    out.emplace_back(prefix + parameters[i].first, parameters[i].second);
  for (size_t i = 0; i + child_buffers < buffers.size(); ++i)
    out.emplace_back(prefix + buffers[i].first, buffers[i].second);
  for (const auto& [name, child] : children) collect_state(*child, prefix + name + ".", out);
}

std::string list_keys(const std::vector<std::string>& keys) {
  std::string text;
  const size_t shown = std::min<size_t>(keys.size(), 8);
  for (size_t i = 0; i < shown; ++i) text += (i ? ", " : "") + keys[i];
  if (keys.size() > shown) text += ", ... (" + std::to_string(keys.size() - shown) + " more)";
  return text;
}

}  // namespace

NamedTensors state_dict(const Module& module) {
  NamedTensors out;
  collect_state(module, "", out);
  return out;
}

namespace {

// Each of the module's tensors paired with its source in `state`.
using LoadPlan = std::vector<std::pair<Tensor, const Tensor*>>;

// Checks keys, shapes and dtypes; changes nothing.
LoadPlan plan_load(const Module& module, const NamedTensors& state) {
  std::map<std::string, const Tensor*> given;
  for (const auto& [name, tensor] : state) {
    if (!given.emplace(name, &tensor).second) {
      throw std::invalid_argument("load_state_dict: key '" + name + "' appears twice");
    }
  }
  const NamedTensors target = state_dict(module);
  std::vector<std::string> missing, unexpected;
  std::map<std::string, bool> known;
  for (const auto& [name, tensor] : target) {
    known[name] = true;
    if (!given.count(name)) missing.push_back(name);
  }
  for (const auto& [name, tensor] : state)
    if (!known.count(name)) unexpected.push_back(name);
  if (!missing.empty() || !unexpected.empty()) {
    std::string message = "load_state_dict (" + module.describe() + "):";
    if (!missing.empty()) message += " missing keys: " + list_keys(missing) + ".";
    if (!unexpected.empty()) message += " unexpected keys: " + list_keys(unexpected) + ".";
    throw std::invalid_argument(message);
  }
  LoadPlan plan;
  for (const auto& [name, tensor] : target) {
    const Tensor& source = *given.at(name);
    if (!source.defined()) {
      throw std::invalid_argument("load_state_dict: '" + name + "' is undefined");
    }
    if (source.shape() != tensor.shape()) {
      throw std::invalid_argument("load_state_dict: '" + name + "' has shape " +
                                  shape_str(source.shape()) + ", the model expects " +
                                  shape_str(tensor.shape()));
    }
    if (source.dtype() != tensor.dtype()) {
      throw std::invalid_argument("load_state_dict: '" + name + "' has dtype " +
                                  dtype_name(source.dtype()) + ", the model expects " +
                                  dtype_name(tensor.dtype()) +
                                  " (convert the model with Module::to first, or the file)");
    }
    plan.emplace_back(tensor, &source);
  }
  return plan;
}

// Copies into the model's own storage (the handles stay the same tensors).
void execute_load(LoadPlan& plan) {
  NoGradGuard no_grad;
  for (auto& [destination, source] : plan) destination.copy_(*source);
}

}  // namespace

void load_state_dict(Module& module, const NamedTensors& state) {
  // Everything is checked before anything is copied: a failed load changes nothing.
  LoadPlan plan = plan_load(module, state);
  execute_load(plan);
}

void save_model(const std::string& path, const Module& model, const SafetensorsMetadata& metadata) {
  save_safetensors(path, state_dict(model), metadata);
}

NamedTensors read_weights_file(const std::string& path) {
  // A zip archive starts "PK\x03\x04" (or "PK\x05\x06" when empty), a legacy
  // torch.save file with pickle's PROTO byte 0x80 (which torch_file refuses,
  // saying how to convert); a safetensors file with its header's length, an
  // 8-byte little-endian number far below either.
  std::ifstream in(path, std::ios::binary);
  char first[2] = {0, 0};
  in.read(first, 2);
  const bool torch_file = (first[0] == 'P' && first[1] == 'K') || first[0] == '\x80';
  if (torch_file) return load_torch_state_dict(path);
  NamedTensors model_part;
  const std::string prefix = kOptimizerPrefix;
  for (auto& [name, tensor] : load_safetensors(path).tensors)
    if (name.rfind(prefix, 0) != 0) model_part.emplace_back(name, std::move(tensor));
  return model_part;
}

void load_model(const std::string& path, Module& model) {
  const NamedTensors model_part = read_weights_file(path);
  try {
    load_state_dict(model, model_part);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(path + ": " + printable_text(e.what()));  // names from the file
  }
}

void save_checkpoint(const std::string& path, const Module& model, const Optimizer& optimizer,
                     const SafetensorsMetadata& metadata) {
  NamedTensors all = state_dict(model);
  for (const auto& [name, tensor] : optimizer.state_dict())
    all.emplace_back(kOptimizerPrefix + name, tensor);
  save_safetensors(path, all, metadata);
}

SafetensorsMetadata load_checkpoint(const std::string& path, Module& model, Optimizer& optimizer) {
  const SafetensorsFile file = load_safetensors(path);
  NamedTensors model_part, optimizer_part;
  const std::string prefix = kOptimizerPrefix;
  for (const auto& [name, tensor] : file.tensors) {
    if (name.rfind(prefix, 0) == 0)
      optimizer_part.emplace_back(name.substr(prefix.size()), tensor);
    else
      model_part.emplace_back(name, tensor);
  }
  try {
    // Check the model's part, then load the optimizer (which itself changes
    // nothing when it fails), then copy the model's: a mismatched checkpoint
    // leaves both as they were.
    LoadPlan plan = plan_load(model, model_part);
    optimizer.load_state_dict(optimizer_part);
    execute_load(plan);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(path + ": " + printable_text(e.what()));  // names from the file
  }
  return file.metadata;
}

}  // namespace b3
