// `b3 suggest`: the batch sizes Remi Coulom's rule of thumb gives for a GPU and
// an image shape,
//
//     batch(n) = int(n * 2^14 * SM / (H * W * C)),   n = 1, 2, 3, ...
//
// (2^14 values per SM per "wave": batches that fill every SM evenly), beside
// the best batch size a sweep measured (--results results.json).
// The SM count comes from the CUDA driver (libcuda, loaded at run time, see
// nvml.h) or from --sm; on a machine without a GPU it is unknown and the
// command says so, computing the table only when --sm is given.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "cli/commands.h"
#include "experiment/nvml.h"
#include "experiment/report.h"

namespace b3::cli {

namespace {

struct SuggestArgs {
  int64_t sm = 0;  // 0: ask the driver
  int gpu_index = 0;
  int64_t image_size = 224;
  bool image_size_set = false;  // else taken from --results when given
  int64_t channels = 3;
  int64_t max_batch = 1024;
  std::string results;
};

struct Measured {
  std::map<int64_t, double> images_per_second;  // batch -> mean
  int64_t best_batch = 0;
  int64_t image_size = 0;
  std::string description;
};

Measured read_results(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("--results: cannot read " + path);
  nlohmann::json j;
  try {
    in >> j;
  } catch (const std::exception& e) {
    throw std::invalid_argument("--results: " + path + " is not JSON: " + e.what());
  }
  if (j.value("schema", std::string()) != "b3-sweep/1" || !j.contains("summary")) {
    throw std::invalid_argument("--results: " + path +
                                " is not a sweep result (b3 sweep's results.json)");
  }
  Measured m;
  double best = -1.0;
  for (const nlohmann::json& row : j["summary"]) {
    const int64_t batch = row.value("batch_size", int64_t{0});
    const nlohmann::json& rate = row["images_per_second"]["mean"];
    if (!rate.is_number()) continue;
    m.images_per_second[batch] = rate.get<double>();
    if (rate.get<double>() > best) {
      best = rate.get<double>();
      m.best_batch = batch;
    }
  }
  const nlohmann::json& config = j["config"];
  m.image_size = config.value("image_size", int64_t{0});
  m.description = j.value("tool", std::string("?")) + " on " +
                  config.value("device_name", std::string("?")) + ", " +
                  config.value("dtype", std::string("?")) + ", " +
                  config.value("layout", std::string("?")) + ", image " +
                  std::to_string(config.value("image_size", int64_t{0})) + ", " +
                  std::to_string(config.value("repeats", int64_t{0})) + " runs per batch size";
  return m;
}

void run_suggest(SuggestArgs args) {
  std::optional<Measured> measured;
  if (!args.results.empty()) measured = read_results(args.results);
  if (measured && measured->image_size > 0 && measured->image_size != args.image_size) {
    if (args.image_size_set) {
      std::printf("note: the sweep in %s used %lldx%lld images, the rule below %lldx%lld\n",
                  args.results.c_str(), static_cast<long long>(measured->image_size),
                  static_cast<long long>(measured->image_size),
                  static_cast<long long>(args.image_size), static_cast<long long>(args.image_size));
    } else {
      args.image_size = measured->image_size;  // the sweep's images, unless told otherwise
    }
  }
  const int64_t values = args.image_size * args.image_size * args.channels;
  std::printf("Remi Coulom's rule: batch = int(n * 2^14 * SM / (H * W * C))\n");
  std::printf("image: %lld x %lld x %lld = %lld values per image\n",
              static_cast<long long>(args.image_size), static_cast<long long>(args.image_size),
              static_cast<long long>(args.channels), static_cast<long long>(values));
  int64_t sm = args.sm;
  if (sm > 0) {
    std::printf("SM count: %lld (--sm)\n", static_cast<long long>(sm));
  } else {
    std::string why_not;
    if (auto facts = gpu::query_cuda_device(args.gpu_index, why_not)) {
      sm = facts->sm_count;
      std::printf("GPU %d: %s, %d SMs, compute capability %d.%d (from the CUDA driver)\n",
                  args.gpu_index, facts->name.c_str(), facts->sm_count, facts->compute_major,
                  facts->compute_minor);
    } else {
      std::printf(
          "SM count unknown: %s.\n"
          "This needs a GPU; pass --sm N to compute the rule for one (V100: 80, A100: 108, "
          "H100 SXM: 132, RTX 4090: 128).\n",
          why_not.c_str());
    }
  }

  std::set<int64_t> suggested;
  if (sm > 0) {
    std::printf("\n%4s %8s %-14s %s\n", "n", "batch", "kind",
                measured ? "measured images/s (--results)" : "");
    for (int64_t n = 1; n <= 4096; ++n) {
      // Integer arithmetic: int() of a positive quotient is the floor.
      const int64_t batch = n * 16384 * sm / values;
      if (batch > args.max_batch) break;
      if (batch == 0) continue;
      suggested.insert(batch);
      std::string rate;
      if (measured) {
        auto it = measured->images_per_second.find(batch);
        rate = it == measured->images_per_second.end() ? "-" : report::format("%.1f", it->second);
      }
      std::printf("%4lld %8lld %-14s %s\n", static_cast<long long>(n),
                  static_cast<long long>(batch), report::size_category(batch).c_str(),
                  rate.c_str());
    }
    if (suggested.empty()) {
      std::printf("(no n gives a batch between 1 and %lld)\n",
                  static_cast<long long>(args.max_batch));
    }
  }

  if (measured) {
    std::printf("\nmeasured (%s):\n", measured->description.c_str());
    std::printf("%8s %12s %8s %s\n", "batch", "images/s", "relative", "");
    const double best = measured->images_per_second[measured->best_batch];
    for (const auto& [batch, rate] : measured->images_per_second) {
      std::printf("%8lld %12.1f %8.3f %s%s\n", static_cast<long long>(batch), rate, rate / best,
                  batch == measured->best_batch ? "best" : "",
                  suggested.count(batch)
                      ? (batch == measured->best_batch ? ", rule value" : "rule value")
                      : "");
    }
    std::printf("measured best: batch %lld at %.1f images/s",
                static_cast<long long>(measured->best_batch), best);
    if (!suggested.empty()) {
      const auto nearest =
          std::min_element(suggested.begin(), suggested.end(), [&](int64_t a, int64_t b) {
            return std::llabs(a - measured->best_batch) < std::llabs(b - measured->best_batch);
          });
      std::printf("; nearest rule value: %lld", static_cast<long long>(*nearest));
    }
    std::printf("\n");
  }
}

}  // namespace

void register_suggest_command(CLI::App& app) {
  auto args = std::make_shared<SuggestArgs>();
  CLI::App* cmd = app.add_subcommand(
      "suggest", "batch sizes from Remi Coulom's rule int(n * 2^14 * SM / (H*W*C))");
  cmd->add_option("--sm", args->sm, "number of SMs (default: ask the CUDA driver)")
      ->check(CLI::Range(int64_t{1}, int64_t{100000}));
  cmd->add_option("--gpu", args->gpu_index, "which GPU to ask the driver about")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  CLI::Option* image_size =
      cmd->add_option("--image-size", args->image_size,
                      "image height and width (default: the sweep's with --results, else 224)")
          ->check(CLI::Range(int64_t{1}, int64_t{65536}))
          ->capture_default_str();
  cmd->add_option("--channels", args->channels, "image channels")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}))
      ->capture_default_str();
  cmd->add_option("--max-batch", args->max_batch, "list rule values up to this batch size")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30))
      ->capture_default_str();
  cmd->add_option("--results", args->results, "a sweep's results.json: show its measured best")
      ->check(CLI::ExistingFile);
  cmd->callback([args, image_size] {
    args->image_size_set = image_size->count() > 0;
    run_suggest(*args);
  });
}

}  // namespace b3::cli
