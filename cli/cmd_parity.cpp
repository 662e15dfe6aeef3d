// `b3 parity`: one training-mode forward, cross-entropy and backward of a
// MobileNetV3 on given weights and a given batch, every result written to a
// safetensors file (train/parity.h says what goes in and out):
//
//   b3 parity --model mobilenet_v3_large --classes 10 --weights W.safetensors
//             --input X.safetensors --out Y.safetensors [--dtype f32|f64] [--device cpu|cuda]
//
// This file parses the options and prints the loss.
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/range_checks.h"
#include "train/parity.h"

namespace b3::cli {

namespace {

void run_parity(const ParityConfig& config) {
  const ParityResult r = run_parity_step(config);
  std::printf("b3 parity: %s, input %s %s %s: loss %.17g; wrote %zu tensors to %s\n",
              r.model_description.c_str(), shape_str(r.input_shape).c_str(), dtype_name(r.dtype),
              memory_format_name(r.format), r.loss, r.tensors_written, config.out.c_str());
}

}  // namespace

void register_parity_command(CLI::App& app) {
  auto args = std::make_shared<ParityConfig>();
  CLI::App* cmd = app.add_subcommand(
      "parity",
      "one training-mode forward + cross-entropy + backward on given weights and batch; "
      "writes logits, loss, grad.<param> and state.<buffer> to a safetensors file");
  add_model_option(cmd, args->model)->capture_default_str();
  cmd->add_option("--classes", args->classes, "number of classes")
      ->capture_default_str()
      ->check(positive());
  cmd->add_option("--weights", args->weights,
                  "state_dict, .pth (torch.save) or safetensors (torchvision's keys)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--input", args->input, "safetensors with 'input' [N,3,H,W] and 'target' [N]")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--out", args->out, "safetensors file to write the results to")->required();
  cmd->add_option("--dtype", args->dtype, "compute in f32 or f64")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f64"}));
  cmd->add_option("--device", args->device, "cpu or cuda")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_flag("--channels-last", args->channels_last,
                "lay the input out NHWC (channels_last) so every layer runs its NHWC path");
  cmd->callback([args] { run_parity(*args); });
}

}  // namespace b3::cli
