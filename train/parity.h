// A parity step: one training-mode forward, cross-entropy and backward of a
// MobileNetV3 on given weights and a given batch, with every result written
// to a safetensors file, so that any reference (PyTorch, another framework)
// can be checked against b3 without writing C++ (`b3 parity`):
//
//   weights  the model's state_dict (torchvision's keys; F32 or F64; a .pth or a
//            safetensors file, models/state_dict.h read_weights_file), loaded
//            strictly in its own dtype, then converted to `dtype`
//   input    "input" [N, 3, H, W] (floating, logical NCHW order) and
//            "target" [N] (I64 or I32)
//   out      "logits", "loss", "grad.<parameter name>" for every parameter
//            (zeros where the loss does not reach it, PyTorch's None), and
//            "state.<buffer name>" for every buffer after the forward
// Dropout is disabled (p = 0); BatchNorm runs in training mode (batch
// statistics, running statistics updated), as torchvision's model.train().
// channels_last lays the input out NHWC, so every layer runs its NHWC path;
// the results must not change beyond rounding.
#pragma once

#include <cstdint>
#include <string>

#include "tensor/tensor.h"

namespace b3 {

struct ParityConfig {
  std::string model = "mobilenet_v3_large";
  int64_t classes = 10;
  std::string weights;        // state_dict: .pth (torch.save) or safetensors
  std::string input;          // safetensors with "input" and "target"
  std::string out;            // safetensors written
  std::string dtype = "f32";  // f32 | f64
  std::string device = "cpu";
  bool channels_last = false;
};

struct ParityResult {
  std::string model_description;
  Shape input_shape;
  DType dtype = DType::f32;
  MemoryFormat format = MemoryFormat::contiguous;
  double loss = 0.0;
  size_t tensors_written = 0;
};

// Runs the step and writes `config.out`. Throws std::invalid_argument naming
// the file for weights that do not match the model and for a batch without
// a proper "input" and "target"; --device cuda is refused (the parity step
// runs on the CPU).
ParityResult run_parity_step(const ParityConfig& config);

}  // namespace b3
