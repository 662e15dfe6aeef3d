// `b3 suggest`: the batch sizes Remi Coulom's rule of thumb gives for a GPU and
// an image shape, beside the best batch size a sweep measured (--results
// results.json); the rule and the reading of results.json are
// experiment/suggest.h. The SM count comes from the CUDA driver (libcuda,
// loaded at run time, experiment/nvml.h) or from --sm; on a machine without a
// GPU it is unknown and the command says so, computing the table only when
// --sm is given.
#include <cstdio>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/range_checks.h"
#include "experiment/nvml.h"
#include "experiment/report.h"
#include "experiment/suggest.h"

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

// --sm, else the driver's SM count (0 and a note when there is none).
int64_t sm_count(const SuggestArgs& args) {
  if (args.sm > 0) {
    std::printf("SM count: %lld (--sm)\n", static_cast<long long>(args.sm));
    return args.sm;
  }
  std::string why_not;
  if (auto facts = gpu::query_cuda_device(args.gpu_index, why_not)) {
    std::printf("GPU %d: %s, %d SMs, compute capability %d.%d (from the CUDA driver)\n",
                args.gpu_index, facts->name.c_str(), facts->sm_count, facts->compute_major,
                facts->compute_minor);
    return facts->sm_count;
  }
  std::printf(
      "SM count unknown: %s.\n"
      "This needs a GPU; pass --sm N to compute the rule for one (V100: 80, A100: 108, "
      "H100 SXM: 132, RTX 4090: 128).\n",
      why_not.c_str());
  return 0;
}

void print_rule(const std::vector<experiment::RuleValue>& values,
                const std::optional<experiment::MeasuredSweep>& measured, int64_t max_batch) {
  std::printf("\n%4s %8s %-14s %s\n", "n", "batch", "kind",
              measured ? "measured images/s (--results)" : "");
  for (const experiment::RuleValue& v : values) {
    std::string rate;
    if (measured) {
      auto it = measured->images_per_second.find(v.batch);
      rate = it == measured->images_per_second.end() ? "-" : report::format("%.1f", it->second);
    }
    std::printf("%4lld %8lld %-14s %s\n", static_cast<long long>(v.n),
                static_cast<long long>(v.batch), report::size_category(v.batch).c_str(),
                rate.c_str());
  }
  if (values.empty())
    std::printf("(no n gives a batch between 1 and %lld)\n", static_cast<long long>(max_batch));
}

void print_measured(const experiment::MeasuredSweep& measured,
                    const std::vector<experiment::RuleValue>& values) {
  std::set<int64_t> suggested;
  for (const experiment::RuleValue& v : values) suggested.insert(v.batch);
  std::printf("\nmeasured (%s):\n", measured.description.c_str());
  if (measured.images_per_second.empty()) {
    std::printf("no batch size there has a mean images/s\n");
    return;
  }
  std::printf("%8s %12s %8s %s\n", "batch", "images/s", "relative", "");
  const double best = measured.images_per_second.at(measured.best_batch);
  for (const auto& [batch, rate] : measured.images_per_second) {
    std::printf("%8lld %12.1f %8.3f %s%s\n", static_cast<long long>(batch), rate, rate / best,
                batch == measured.best_batch ? "best" : "",
                suggested.count(batch)
                    ? (batch == measured.best_batch ? ", rule value" : "rule value")
                    : "");
  }
  std::printf("measured best: batch %lld at %.1f images/s",
              static_cast<long long>(measured.best_batch), best);
  if (!values.empty()) {
    std::printf("; nearest rule value: %lld", static_cast<long long>(experiment::nearest_rule_value(
                                                  values, measured.best_batch)));
  }
  std::printf("\n");
}

void run_suggest(SuggestArgs args) {
  std::optional<experiment::MeasuredSweep> measured;
  if (!args.results.empty()) measured = experiment::read_sweep_results(args.results);
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
  const int64_t sm = sm_count(args);
  std::vector<experiment::RuleValue> rule;
  if (sm > 0) {
    rule = experiment::coulom_batch_sizes(sm, values, args.max_batch);
    print_rule(rule, measured, args.max_batch);
  }
  if (measured) print_measured(*measured, rule);
}

}  // namespace

void register_suggest_command(CLI::App& app) {
  auto args = std::make_shared<SuggestArgs>();
  CLI::App* cmd = app.add_subcommand(
      "suggest", "batch sizes from Remi Coulom's rule int(n * 2^14 * SM / (H*W*C))");
  cmd->add_option("--sm", args->sm, "number of SMs (default: ask the CUDA driver)")
      ->check(between(1, 100000));
  cmd->add_option("--gpu", args->gpu_index, "which GPU to ask the driver about")
      ->check(non_negative())
      ->capture_default_str();
  CLI::Option* image_size =
      cmd->add_option("--image-size", args->image_size,
                      "image height and width (default: the sweep's with --results, else 224)")
          ->check(between(1, 65536))
          ->capture_default_str();
  cmd->add_option("--channels", args->channels, "image channels")
      ->check(between(1, 4096))
      ->capture_default_str();
  cmd->add_option("--max-batch", args->max_batch, "list rule values up to this batch size")
      ->check(between(1, 1 << 30))
      ->capture_default_str();
  cmd->add_option("--results", args->results, "a sweep's results.json: show its measured best")
      ->check(CLI::ExistingFile);
  cmd->callback([args, image_size] {
    args->image_size_set = image_size->count() > 0;
    run_suggest(*args);
  });
}

}  // namespace b3::cli
