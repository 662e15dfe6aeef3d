// The optimizer, the model's placement and the precision of a training
// command (see setup.h).
#include "train/setup.h"

#include <stdexcept>

#include "optim/adam.h"
#include "optim/sgd.h"

namespace b3 {

std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& config, const Module& model) {
  // The parameters that train (frozen ones, requires_grad off, get no state).
  std::vector<Tensor> parameters;
  for (const Tensor& p : model.parameters())
    if (p.requires_grad()) parameters.push_back(p);
  if (config.name == "adam" || config.name == "adamw") {
    AdamOptions options;
    options.lr = config.lr;
    options.weight_decay = config.weight_decay;
    if (config.name == "adamw") return std::make_unique<AdamW>(parameters, options);
    return std::make_unique<Adam>(parameters, options);
  }
  if (config.name == "sgd") {
    SgdOptions options;
    options.lr = config.lr;
    options.momentum = config.momentum;
    options.weight_decay = config.weight_decay;
    return std::make_unique<Sgd>(parameters, options);
  }
  throw std::invalid_argument("--optimizer must be adam, adamw or sgd, got '" + config.name + "'");
}

void prepare_model(Module& model, const Device& device, MemoryFormat format) {
  model.to(device);
  model.to(format);
}

bool resolve_amp(std::optional<bool> amp, bool cuda, const std::string& command) {
  const bool on = amp.value_or(cuda);
  if (on && !cuda) {
    throw std::invalid_argument((command.empty() ? "" : command + ": ") +
                                "--amp (f16 mixed precision) needs --device cuda; the CPU trains "
                                "in f32");
  }
  return on;
}

}  // namespace b3
