// `b3 stepcost`: the analytic cost of one training step (experiment/step_cost.h):
// GFLOP and the DRAM-traffic floor in GB per layer type for forward, backward
// and the update, the totals, the arithmetic intensity, and, given a measured
// step time, the achieved GFLOP/s and GB/s and their fraction of a bandwidth
// (--bandwidth-gbs, or the host's copy bandwidth measured here).
#include <omp.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/range_checks.h"
#include "experiment/step_cost.h"
#include "models/mobilenet_v3.h"

namespace b3::cli {

namespace {

struct StepCostArgs {
  std::string model = "mobilenet_v3_large";
  int64_t classes = 10;
  int64_t image_size = 32;
  int64_t batch_size = 128;
  double width_mult = 1.0;
  int64_t channel_divisor = 8;
  std::string optimizer = "sgd";
  std::string dtype = "f32";
  std::optional<double> seconds_per_step;
  std::optional<double> bandwidth_gbs;
  int threads = 2;
  bool layers = false;
};

void print_row(const char* name, const LayerCost& row) {
  const PassCost t = row.total();
  std::printf("%-24s %8.3f %8.3f %8.3f %8.3f   %8.4f %8.4f %8.4f %8.4f   %8.4f\n", name,
              row.forward.flops / 1e9, row.backward.flops / 1e9, row.update.flops / 1e9,
              t.flops / 1e9, row.forward.bytes / 1e9, row.backward.bytes / 1e9,
              row.update.bytes / 1e9, t.bytes / 1e9, t.fused_bytes / 1e9);
}

void run_stepcost(const StepCostArgs& args) {
  StepCostOptions options;
  options.model.arch = parse_mobilenet_v3_arch(args.model);
  options.model.num_classes = args.classes;
  options.model.width_mult = args.width_mult;
  options.model.channel_divisor = args.channel_divisor;
  options.image_size = args.image_size;
  options.batch_size = args.batch_size;
  options.activation_bytes = args.dtype == "f16" ? 2 : 4;
  options.optimizer =
      args.optimizer == "adam" ? StepOptimizerKind::adam : StepOptimizerKind::sgd_momentum;
  const StepCost cost = mobilenet_v3_step_cost(options);

  std::printf(
      "b3 stepcost: %s %lldx%lld batch %lld, %lld classes, width %.2f divisor %lld, %s "
      "activations (f32 parameters), %s; %lld parameters\n",
      options.model.arch == MobileNetV3Arch::large ? "MobileNetV3-Large" : "MobileNetV3-Small",
      static_cast<long long>(args.image_size), static_cast<long long>(args.image_size),
      static_cast<long long>(args.batch_size), static_cast<long long>(args.classes),
      args.width_mult, static_cast<long long>(args.channel_divisor), args.dtype.c_str(),
      args.optimizer == "adam" ? "Adam" : "SGD momentum", static_cast<long long>(cost.parameters));
  std::printf(
      "floor model: each op reads its inputs and writes its outputs once from/to DRAM "
      "(experiment/step_cost.h); fused: BN+activation and residual add merged into neighbours\n");
  std::printf("%-24s %8s %8s %8s %8s   %8s %8s %8s %8s   %8s\n", "", "GFLOP", "", "", "", "GB", "",
              "", "", "fused GB");
  std::printf("%-24s %8s %8s %8s %8s   %8s %8s %8s %8s   %8s\n", "layer type", "fwd", "bwd",
              "update", "total", "fwd", "bwd", "update", "total", "total");
  if (args.layers) {
    for (const LayerCost& l : cost.layers) print_row(l.name.c_str(), l);
    std::printf("%s\n", std::string(120, '-').c_str());
  }
  for (const LayerCost& row : cost.by_category()) print_row(row.name.c_str(), row);
  LayerCost total{"total", CostCategory::optimizer, cost.forward(), cost.backward(), cost.update()};
  print_row("total", total);
  const PassCost t = cost.total();
  std::printf(
      "step: %.3f GFLOP, floor %.4f GB (fused %.4f GB); arithmetic intensity %.2f FLOP/byte "
      "(fused %.2f); per image %.4f GFLOP, %.4f GB\n",
      t.flops / 1e9, t.bytes / 1e9, t.fused_bytes / 1e9, cost.arithmetic_intensity(),
      cost.fused_arithmetic_intensity(), t.flops / 1e9 / static_cast<double>(args.batch_size),
      t.bytes / 1e9 / static_cast<double>(args.batch_size));

  if (args.bandwidth_gbs && !args.seconds_per_step) {
    // Without a measured step: the time the floor alone takes at that bandwidth.
    std::printf("at %.1f GB/s the floor takes %.3f ms per step (fused %.3f ms)\n",
                *args.bandwidth_gbs, 1e3 * t.bytes / (*args.bandwidth_gbs * 1e9),
                1e3 * t.fused_bytes / (*args.bandwidth_gbs * 1e9));
  }
  if (args.seconds_per_step) {
    double bandwidth = 0.0;
    std::string source;
    if (args.bandwidth_gbs) {
      bandwidth = *args.bandwidth_gbs * 1e9;
      source = "given";
    } else {
      bandwidth = measure_host_copy_bandwidth(args.threads);
      source = "host copy, " + std::to_string(args.threads) + " threads, best of 3";
    }
    const AchievedRate r = achieved_rate(cost, *args.seconds_per_step, bandwidth);
    std::printf(
        "at %.3f ms per step: %.2f GFLOP/s, %.2f GB/s (fused floor %.2f GB/s) = %.1f%% (fused "
        "%.1f%%) of %.1f GB/s (%s)\n",
        1e3 * *args.seconds_per_step, r.flops_per_second / 1e9, r.bytes_per_second / 1e9,
        r.fused_bytes_per_second / 1e9, 100.0 * r.fraction_of_bandwidth,
        100.0 * r.fused_fraction_of_bandwidth, bandwidth / 1e9, source.c_str());
  }
}

}  // namespace

void register_stepcost_command(CLI::App& app) {
  auto args = std::make_shared<StepCostArgs>();
  CLI::App* cmd = app.add_subcommand(
      "stepcost", "FLOPs and memory-traffic floor of one training step, per layer type");
  add_model_option(cmd, args->model, true);
  cmd->add_option("--classes", args->classes, "classes")->check(positive());
  cmd->add_option("--image-size", args->image_size, "image height and width")->check(positive());
  cmd->add_option("--batch-size", args->batch_size, "batch size")->check(positive());
  cmd->add_option("--width-mult", args->width_mult, "channel width multiplier")->check(positive());
  cmd->add_option("--channel-divisor", args->channel_divisor, "round channels to this multiple")
      ->check(positive());
  cmd->add_option("--optimizer", args->optimizer, "sgd (momentum) or adam")
      ->check(CLI::IsMember({"sgd", "adam"}));
  cmd->add_option("--dtype", args->dtype, "activation dtype: f32, or f16 (mixed precision)")
      ->check(CLI::IsMember({"f32", "f16"}));
  cmd->add_option("--seconds-per-step", args->seconds_per_step,
                  "a measured step time: report the achieved rates")
      ->check(positive());
  cmd->add_option("--bandwidth-gbs", args->bandwidth_gbs,
                  "memory bandwidth to compare with (default: measure the host's copy bandwidth)")
      ->check(positive());
  cmd->add_option("--threads", args->threads, "threads for the host bandwidth measurement")
      ->check(positive());
  cmd->add_flag("--layers", args->layers, "also print every layer");
  cmd->callback([args] { run_stepcost(*args); });
}

}  // namespace b3::cli
