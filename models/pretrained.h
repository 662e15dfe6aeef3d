// Starting a model from pretrained weights whose classifier differs
// (fine-tuning, `b3 train --init-from FILE`): torchvision's ImageNet weights
// have a 1000-class head, CIFAR-10 wants 10.
//
//   load_pretrained(model, weights, head, source)
//     every model tensor whose key is in `weights` with the same shape and
//     dtype is copied in ("loaded"); the head's tensors (keys starting with
//     `head`, the last Linear layer, whose shape follows the class count)
//     keep the model's own fresh initialization when their shape differs
//     ("re-initialized": torchvision's init, normal(0, 0.01) weights and zero
//     bias, as fine-tuning recipes replace that layer); keys of the file the
//     model does not have are "skipped". Any other difference (a key the
//     file lacks, a shape or dtype that differs outside the head) is an
//     error naming the key and both shapes, and nothing is copied.
#pragma once

#include <string>
#include <vector>

#include "layers/module.h"
#include "tensor/safetensors.h"

namespace b3 {

// MobileNetV3's head: classifier.3 (Linear 1280 -> classes, or 1024 for Small).
inline constexpr const char* kMobileNetV3Head = "classifier.3.";

struct PretrainedLoad {
  std::vector<std::string> loaded;         // keys copied from the file
  std::vector<std::string> reinitialized;  // "key: file [1000, 1280], model [10, 1280]"
  std::vector<std::string> skipped;        // keys of the file the model does not have
};

PretrainedLoad load_pretrained(Module& model, const NamedTensors& weights, const std::string& head,
                               const std::string& source);

// A few lines for the log: counts, then the re-initialized and skipped keys.
std::string describe_pretrained_load(const PretrainedLoad& load, const std::string& source);

}  // namespace b3
