// The layers of a MobileNetV3 with their output shapes, activation bytes and
// parameter counts (`b3 info`), from one batch-1 forward in eval mode without
// gradients: shapes and bytes then scale with the batch. A row per top-level
// block: features.0 .. features.16, avgpool (before the flatten), and
// classifier.0 .. classifier.3.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/mobilenet_v3.h"

namespace b3 {

struct LayerSummary {
  std::string name;           // "features.3", "avgpool", "classifier.0"
  std::string description;    // Module::describe()
  Shape output_shape;         // at batch 1
  int64_t output_values = 0;  // per image
  int64_t parameters = 0;
};

// The model's top-level blocks on a random batch-1 image of `image_size`.
std::vector<LayerSummary> summarize_layers(MobileNetV3& model, int64_t image_size);

}  // namespace b3
