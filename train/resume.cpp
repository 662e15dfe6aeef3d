// Resume checkpoints' metadata, generators, settings check and file rotation
// (train/resume.h).
#include "train/resume.h"

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <system_error>

#include "layers/dropout.h"
#include "models/state_dict.h"
#include "tensor/json_integer.h"
#include "tensor/printable_text.h"
#include "tensor/safetensors.h"

namespace b3 {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int kResumeFormat = 1;
constexpr const char* kPrefix = "checkpoint-step";
constexpr const char* kSuffix = ".safetensors";

void collect_dropouts(Module& module, std::vector<Dropout*>& out) {
  if (auto* d = dynamic_cast<Dropout*>(&module)) out.push_back(d);
  for (auto& [name, child] : module.named_children()) collect_dropouts(*child, out);
}

// An integer field of the metadata; a float, a string or a value outside
// Integer's range is refused (never cast: see tensor/json_integer.h).
template <typename Integer = int64_t>
Integer integer_at(const json& object, const char* field) {
  const json& value = object.at(field);
  if (const std::optional<Integer> v = exact_json_integer<Integer>(value)) return *v;
  std::string shown = value.dump();
  if (shown.size() > 40) shown = shown.substr(0, 40) + "...";
  throw std::invalid_argument(std::string("\"") + field + "\" must be an integer, got " + shown);
}

json eval_json(const std::optional<EvalResult>& e) {
  if (!e) return nullptr;
  return {
      {"loss", e->loss}, {"accuracy", e->accuracy}, {"images", e->images}, {"seconds", e->seconds}};
}

std::optional<EvalResult> eval_of(const json& j) {
  if (j.is_null()) return std::nullopt;
  EvalResult e;
  e.loss = j.at("loss").get<double>();
  e.accuracy = j.at("accuracy").get<double>();
  e.images = integer_at(j, "images");
  e.seconds = j.at("seconds").get<double>();
  return e;
}

// The step of a checkpoint-step<N>.safetensors name, or -1.
int64_t step_of(const std::string& name) {
  const std::string prefix = kPrefix, suffix = kSuffix;
  if (name.size() <= prefix.size() + suffix.size() || name.rfind(prefix, 0) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return -1;
  const std::string digits =
      name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.empty() || digits.size() > 18 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return -1;
  return std::stoll(digits);
}

std::vector<std::pair<int64_t, fs::path>> checkpoints_in(const fs::path& dir) {
  std::vector<std::pair<int64_t, fs::path>> found;
  std::error_code error;
  if (!fs::is_directory(dir, error)) return found;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, error)) {
    const int64_t step = step_of(entry.path().filename().string());
    if (step >= 0 && entry.is_regular_file(error)) found.emplace_back(step, entry.path());
  }
  std::sort(found.begin(), found.end());
  return found;
}

// A GradScaler's state_dict as {"scale": s, "growth_tracker": n}; null without one.
json loss_scale_json(const NamedTensors& state) {
  if (state.empty()) return nullptr;
  json out = json::object();
  for (const auto& [name, tensor] : state) {
    if (name == "scale")
      out["scale"] = tensor.item();
    else if (name == "growth_tracker")
      out["growth_tracker"] = static_cast<int64_t>(tensor.item());
    else
      throw std::invalid_argument("resume_metadata: a loss-scale entry '" + name +
                                  "' (expected scale and growth_tracker)");
  }
  return out;
}

NamedTensors loss_scale_of(const json& j) {
  if (j.is_null()) return {};
  return {{"scale", full({}, j.at("scale").get<double>(), TensorOptions(DType::f32))},
          {"growth_tracker", full({}, static_cast<double>(integer_at(j, "growth_tracker")),
                                  TensorOptions(DType::i64))}};
}

}  // namespace

std::vector<std::vector<uint64_t>> generator_states(Module& model) {
  std::vector<Dropout*> dropouts;
  collect_dropouts(model, dropouts);
  std::vector<std::vector<uint64_t>> states;
  for (Dropout* d : dropouts) states.push_back(d->generator().state());
  return states;
}

void restore_generator_states(Module& model, const std::vector<std::vector<uint64_t>>& states) {
  std::vector<Dropout*> dropouts;
  collect_dropouts(model, dropouts);
  if (dropouts.size() != states.size()) {
    throw std::invalid_argument("the checkpoint has " + std::to_string(states.size()) +
                                " dropout generators, the model " +
                                std::to_string(dropouts.size()));
  }
  for (size_t i = 0; i < dropouts.size(); ++i) dropouts[i]->generator().set_state(states[i]);
}

SafetensorsMetadata resume_metadata(const TrainProgress& progress, const RunSettings& settings,
                                    Module& model, const NamedTensors& loss_scale) {
  json epochs = json::array();
  for (const EpochReport& e : progress.finished) {
    epochs.push_back({{"epoch", e.epoch},
                      {"steps", e.steps},
                      {"train_loss", e.train_loss},
                      {"train_accuracy", e.train_accuracy},
                      {"train_seconds", e.train_seconds},
                      {"images_per_second", e.images_per_second},
                      {"validation", eval_json(e.validation)}});
  }
  json settings_json = json::array();
  for (const auto& [name, value] : settings) settings_json.push_back({name, value});
  json generators = json::array();
  for (const std::vector<uint64_t>& state : generator_states(model)) generators.push_back(state);
  const json resume = {{"format", kResumeFormat},
                       {"progress",
                        {{"epoch", progress.epoch},
                         {"step_in_epoch", progress.step_in_epoch},
                         {"global_step", progress.global_step},
                         {"loss_sum", progress.loss_sum},
                         {"correct", progress.correct},
                         {"images", progress.images},
                         {"seconds_in_epoch", progress.seconds_in_epoch},
                         {"finished", epochs}}},
                       {"settings", settings_json},
                       {"generators", generators},
                       {"loss_scale", loss_scale_json(loss_scale)}};
  return {{kResumeMetadataKey, resume.dump()}};
}

ResumePoint read_resume_point(const SafetensorsMetadata& metadata, const std::string& path) {
  const auto found = metadata.find(kResumeMetadataKey);
  if (found == metadata.end()) {
    throw std::invalid_argument(path +
                                ": not a resume checkpoint (no \"b3.resume\" metadata: a weights "
                                "file or a final checkpoint; resume from a "
                                "checkpoint-step*.safetensors that --checkpoint-every wrote)");
  }
  ResumePoint point;
  try {
    const json resume = json::parse(found->second);
    if (integer_at<int>(resume, "format") != kResumeFormat) {
      throw std::invalid_argument("resume format " + resume.at("format").dump() +
                                  ", this b3 reads format " + std::to_string(kResumeFormat));
    }
    const json& p = resume.at("progress");
    TrainProgress& progress = point.progress;
    progress.epoch = integer_at(p, "epoch");
    progress.step_in_epoch = integer_at(p, "step_in_epoch");
    progress.global_step = integer_at(p, "global_step");
    progress.loss_sum = p.at("loss_sum").get<double>();
    progress.correct = integer_at(p, "correct");
    progress.images = integer_at(p, "images");
    progress.seconds_in_epoch = p.at("seconds_in_epoch").get<double>();
    if (progress.epoch < 0 || progress.step_in_epoch < 0 || progress.global_step < 0)
      throw std::invalid_argument("negative epoch or step");
    for (const json& e : p.at("finished")) {
      EpochReport report;
      report.epoch = integer_at(e, "epoch");
      report.steps = integer_at(e, "steps");
      report.train_loss = e.at("train_loss").get<double>();
      report.train_accuracy = e.at("train_accuracy").get<double>();
      report.train_seconds = e.at("train_seconds").get<double>();
      report.images_per_second = e.at("images_per_second").get<double>();
      report.validation = eval_of(e.at("validation"));
      progress.finished.push_back(report);
    }
    for (const json& s : resume.at("settings"))
      point.settings.emplace_back(s.at(0).get<std::string>(), s.at(1).get<std::string>());
    for (const json& g : resume.at("generators")) {
      if (!g.is_array()) throw std::invalid_argument("a generator state is not an array");
      std::vector<uint64_t> state;
      for (const json& word : g) {
        const std::optional<uint64_t> w = exact_json_integer<uint64_t>(word);
        if (!w)
          throw std::invalid_argument(
              "a generator state holds a word that is not a 64-bit unsigned integer");
        state.push_back(*w);
      }
      point.generators.push_back(std::move(state));
    }
    if (resume.contains("loss_scale")) point.loss_scale = loss_scale_of(resume.at("loss_scale"));
  } catch (const json::exception& e) {
    throw std::invalid_argument(path + ": malformed \"b3.resume\" metadata: " +
                                printable_text(e.what()));  // JSON errors quote the text
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(path +
                                ": malformed \"b3.resume\" metadata: " + printable_text(e.what()));
  }
  return point;
}

ResumePoint load_resume_checkpoint(const std::string& path, Module& model, Optimizer& optimizer) {
  const SafetensorsMetadata metadata = load_checkpoint(path, model, optimizer);
  ResumePoint point = read_resume_point(metadata, path);
  try {
    restore_generator_states(model, point.generators);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(path + ": " + e.what());
  }
  return point;
}

void require_same_run(const RunSettings& saved, const RunSettings& current, bool allow_lr_change,
                      const std::string& path, std::string* note) {
  std::string differences;
  const auto value_in = [](const RunSettings& settings, const std::string& name) {
    for (const auto& [n, v] : settings)
      if (n == name) return std::optional<std::string>(v);
    return std::optional<std::string>();
  };
  std::vector<std::string> names;
  for (const auto& [name, value] : saved) names.push_back(name);
  for (const auto& [name, value] : current)
    if (!value_in(saved, name)) names.push_back(name);
  for (const std::string& name : names) {
    const auto before = value_in(saved, name), now = value_in(current, name);
    if (before == now) continue;
    const std::string line = "\n  " + printable_text(name) + ": " +
                             printable_text(before.value_or("(absent)")) + " in the checkpoint, " +
                             now.value_or("(absent)") + " now";
    if (name == "lr" && allow_lr_change) {
      if (note != nullptr) *note += "the learning rate changes on resume:" + line;
      continue;
    }
    differences += line;
  }
  if (!differences.empty()) {
    throw std::invalid_argument(path +
                                ": the run was started with other settings; resume it with the "
                                "same ones (--allow-lr-change lets --lr differ):" +
                                differences);
  }
}

std::string checkpoint_file_name(int64_t step) {
  if (step < 0) throw std::invalid_argument("checkpoint_file_name: negative step");
  std::string digits = std::to_string(step);
  if (digits.size() < 9) digits.insert(0, 9 - digits.size(), '0');
  return std::string(kPrefix) + digits + kSuffix;
}

std::optional<fs::path> newest_checkpoint(const fs::path& dir) {
  const auto found = checkpoints_in(dir);
  if (found.empty()) return std::nullopt;
  return found.back().second;
}

void remove_old_checkpoints(const fs::path& dir, int keep) {
  if (keep < 1) throw std::invalid_argument("--keep-checkpoints must be at least 1");
  const auto found = checkpoints_in(dir);
  for (size_t i = 0; i + static_cast<size_t>(keep) < found.size(); ++i) {
    std::error_code error;
    fs::remove(found[i].second, error);  // best effort: a leftover costs disk, not correctness
  }
  // A save killed before its rename leaves its temporary behind; remove those
  // whose writer no longer runs (a live writer's file is being written).
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, error)) {
    const std::optional<SaveTemporary> temporary =
        parse_save_temporary(entry.path().filename().string());
    if (temporary && step_of(temporary->target) >= 0 && temporary->writer_pid > 0 &&
        ::kill(static_cast<pid_t>(temporary->writer_pid), 0) != 0 && errno == ESRCH) {
      std::error_code ignored;
      fs::remove(entry.path(), ignored);
    }
  }
}

}  // namespace b3
