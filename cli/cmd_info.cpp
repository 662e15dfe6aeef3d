// `b3 info`: the model's layers with output shapes, activation bytes and
// parameter counts (models/layer_summary.h: one batch-1 forward; shapes and
// bytes scale with the batch), then the total parameter count on a line of
// its own. This file parses the options and prints the table.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/range_checks.h"
#include "models/layer_summary.h"
#include "models/mobilenet_v3.h"

namespace b3::cli {

namespace {

struct InfoArgs {
  std::string model = "mobilenet_v3_large";
  int64_t classes = 10;
  int64_t image_size = 224;
  int64_t batch_size = 128;
  double width_mult = 1.0;
  int64_t channel_divisor = 8;
};

std::string with_batch(Shape shape, int64_t batch) {
  shape[0] = batch;
  return shape_str(shape);
}

std::string human_bytes(double bytes) {
  char text[32];
  if (bytes >= 1 << 20)
    std::snprintf(text, sizeof text, "%.1f MiB", bytes / (1 << 20));
  else
    std::snprintf(text, sizeof text, "%.1f KiB", bytes / 1024);
  return text;
}

void run_info(const InfoArgs& args) {
  MobileNetV3Options options;
  options.arch = parse_mobilenet_v3_arch(args.model);
  options.num_classes = args.classes;
  options.width_mult = args.width_mult;
  options.channel_divisor = args.channel_divisor;
  MobileNetV3 model(options);
  const std::vector<LayerSummary> layers = summarize_layers(model, args.image_size);

  std::printf("%s, input %s, f32 activations\n", model.describe().c_str(),
              with_batch({1, 3, args.image_size, args.image_size}, args.batch_size).c_str());
  std::printf("%-14s %-46s %-22s %12s %12s\n", "layer", "module", "output", "activations",
              "parameters");
  double total_bytes = 0;
  for (const LayerSummary& layer : layers) {
    const double bytes = static_cast<double>(layer.output_values * args.batch_size) * 4.0;
    total_bytes += bytes;
    std::printf("%-14s %-46s %-22s %12s %12lld\n", layer.name.c_str(), layer.description.c_str(),
                with_batch(layer.output_shape, args.batch_size).c_str(), human_bytes(bytes).c_str(),
                static_cast<long long>(layer.parameters));
  }
  std::printf(
      "layer outputs at batch %lld: %s (a training step keeps more: every op's saved inputs)\n",
      static_cast<long long>(args.batch_size), human_bytes(total_bytes).c_str());
  std::printf("parameters: %lld\n", static_cast<long long>(model.parameter_count()));
}

}  // namespace

void register_info_command(CLI::App& app) {
  auto args = std::make_shared<InfoArgs>();
  CLI::App* cmd =
      app.add_subcommand("info", "layers, output shapes, activation bytes and parameter count");
  add_model_option(cmd, args->model);
  cmd->add_option("--classes", args->classes, "number of classes")->check(positive());
  cmd->add_option("--image-size", args->image_size, "input height and width")
      ->check(between(8, 4096));
  cmd->add_option("--batch-size", args->batch_size, "batch size for the activation bytes")
      ->check(positive());
  cmd->add_option("--width-mult", args->width_mult, "channel width multiplier")->check(positive());
  cmd->add_option("--channel-divisor", args->channel_divisor,
                  "round channels to this multiple (torchvision: 8)")
      ->check(positive());
  cmd->callback([args] { run_info(*args); });
}

}  // namespace b3::cli
