// `b3 info`: the model's layers with output shapes, activation bytes and
// parameter counts, from one batch-1 forward (shapes and bytes scale with
// the batch), then the total parameter count on a line of its own.
#include <cstdio>
#include <iostream>
#include <string>

#include "autograd/grad_mode.h"
#include "cli/commands.h"
#include "models/mobilenet_v3.h"
#include "tensor/random.h"

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
  model.eval();
  NoGradGuard no_grad;
  Generator gen(0);
  Tensor x = rand({1, 3, args.image_size, args.image_size}, gen);

  std::printf("%s, input %s, f32 activations\n", model.describe().c_str(),
              with_batch(x.shape(), args.batch_size).c_str());
  std::printf("%-14s %-46s %-22s %12s %12s\n", "layer", "module", "output", "activations",
              "parameters");
  double total_bytes = 0;
  auto row = [&](const std::string& name, const Module& m, const Tensor& out) {
    const double bytes = static_cast<double>(out.numel() * args.batch_size) * 4.0;
    total_bytes += bytes;
    std::printf("%-14s %-46s %-22s %12s %12lld\n", name.c_str(), m.describe().c_str(),
                with_batch(out.shape(), args.batch_size).c_str(), human_bytes(bytes).c_str(),
                static_cast<long long>(m.parameter_count()));
  };
  for (const auto& [name, layer] : model.features->named_children()) {
    x = layer->forward(x);
    row("features." + name, *layer, x);
  }
  x = model.avgpool->forward(x);
  row("avgpool", *model.avgpool, x);
  x = x.flatten(1);
  for (const auto& [name, layer] : model.classifier->named_children()) {
    x = layer->forward(x);
    row("classifier." + name, *layer, x);
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
  cmd->add_option("--model", args->model, "mobilenet_v3_large or mobilenet_v3_small")
      ->check(CLI::IsMember({"mobilenet_v3_large", "mobilenet_v3_small"}));
  cmd->add_option("--classes", args->classes, "number of classes")->check(CLI::PositiveNumber);
  cmd->add_option("--image-size", args->image_size, "input height and width")
      ->check(CLI::Range(8, 4096));
  cmd->add_option("--batch-size", args->batch_size, "batch size for the activation bytes")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--width-mult", args->width_mult, "channel width multiplier")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--channel-divisor", args->channel_divisor,
                  "round channels to this multiple (torchvision: 8)")
      ->check(CLI::PositiveNumber);
  cmd->callback([args] { run_info(*args); });
}

}  // namespace b3::cli
