// A batch-1 walk over MobileNetV3's top-level blocks (see layer_summary.h).
#include "models/layer_summary.h"

#include "autograd/grad_mode.h"
#include "tensor/random.h"

namespace b3 {

namespace {

LayerSummary summary_of(const std::string& name, const Module& m, const Tensor& out) {
  return {name, m.describe(), out.shape(), out.numel(), m.parameter_count()};
}

}  // namespace

std::vector<LayerSummary> summarize_layers(MobileNetV3& model, int64_t image_size) {
  model.eval();
  NoGradGuard no_grad;
  Generator gen(0);
  Tensor x = rand({1, 3, image_size, image_size}, gen);
  std::vector<LayerSummary> rows;
  for (const auto& [name, layer] : model.features->named_children()) {
    x = layer->forward(x);
    rows.push_back(summary_of("features." + name, *layer, x));
  }
  x = model.avgpool->forward(x);
  rows.push_back(summary_of("avgpool", *model.avgpool, x));
  x = x.flatten(1);
  for (const auto& [name, layer] : model.classifier->named_children()) {
    x = layer->forward(x);
    rows.push_back(summary_of("classifier." + name, *layer, x));
  }
  return rows;
}

}  // namespace b3
