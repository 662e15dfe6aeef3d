// load_pretrained: match the file's tensors to the model's by key, keep the
// head's fresh initialization where the class count differs, refuse any
// other difference before copying anything.
#include "models/pretrained.h"

#include <map>
#include <stdexcept>

#include "autograd/grad_mode.h"
#include "models/state_dict.h"
#include "tensor/printable_text.h"

namespace b3 {

PretrainedLoad load_pretrained(Module& model, const NamedTensors& weights, const std::string& head,
                               const std::string& source) {
  std::map<std::string, const Tensor*> given;
  for (const auto& [name, tensor] : weights) given.emplace(name, &tensor);
  const auto fail = [&](const std::string& why) {
    throw std::invalid_argument(source + ": cannot start " + model.describe() +
                                " from it: " + printable_text(why));
  };
  PretrainedLoad load;
  std::vector<std::pair<Tensor, const Tensor*>> copies;
  std::map<std::string, bool> known;
  for (const auto& [name, tensor] : state_dict(model)) {
    known[name] = true;
    const auto found = given.find(name);
    const bool in_head = name.rfind(head, 0) == 0;
    if (found == given.end()) fail("the file has no '" + name + "'");
    const Tensor& source_tensor = *found->second;
    if (source_tensor.shape() != tensor.shape()) {
      const std::string shapes =
          "file " + shape_str(source_tensor.shape()) + ", model " + shape_str(tensor.shape());
      if (!in_head) fail("'" + name + "' has another shape (" + shapes + ")");
      load.reinitialized.push_back(name + ": " + shapes);
      continue;
    }
    if (source_tensor.dtype() != tensor.dtype()) {
      fail("'" + name + "' has dtype " + dtype_name(source_tensor.dtype()) + ", the model " +
           dtype_name(tensor.dtype()));
    }
    copies.emplace_back(tensor, &source_tensor);
    load.loaded.push_back(name);
  }
  for (const auto& [name, tensor] : weights)
    if (!known.count(name)) load.skipped.push_back(printable_text(name));
  NoGradGuard no_grad;
  for (auto& [destination, source_tensor] : copies) destination.copy_(*source_tensor);
  return load;
}

std::string describe_pretrained_load(const PretrainedLoad& load, const std::string& source) {
  std::string text = "init from " + source + ": loaded " + std::to_string(load.loaded.size()) +
                     " tensors, re-initialized " + std::to_string(load.reinitialized.size()) +
                     ", skipped " + std::to_string(load.skipped.size()) + "\n";
  for (const std::string& line : load.reinitialized) text += "  re-initialized " + line + "\n";
  for (const std::string& name : load.skipped)
    text += "  skipped " + name + " (not in the model)\n";
  return text;
}

}  // namespace b3
