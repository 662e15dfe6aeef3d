// What the model benchmarks (`b3 bench-step`, `b3 bench-infer`) run on: the
// model, the synthetic batch and how many untimed and timed repetitions,
// described once so that the training step and the inference forward are
// measured on the same network and the same data.
#pragma once

#include <cstdint>
#include <string>

#include "data/batch_source.h"
#include "models/mobilenet_v3.h"
#include "tensor/tensor.h"

namespace b3::experiment {

struct BenchmarkWorkload {
  std::string model = "mobilenet_v3_large";
  int64_t classes = 10;
  int64_t image_size = 32;
  int64_t batch_size = 128;
  std::string format = "nhwc";  // the input's memory format: nchw | nhwc
  int threads = 2;              // OpenMP threads (and the host bandwidth measurement's)
  int64_t warmup = 2;           // untimed repetitions first
  int64_t steps = 5;            // timed repetitions
  uint64_t seed = 0;            // weights; the batch uses seed + 1
};

// The benchmarked network: torchvision's MobileNetV3 of `model` with
// `classes` outputs, weights from `seed`.
MobileNetV3Options benchmark_model(const BenchmarkWorkload& workload);

// The synthetic batch on the host: images ~ N(0, 1) in `format`, then labels
// in [0, classes), both from a Generator seeded with seed + 1.
LabeledBatch synthetic_batch(const BenchmarkWorkload& workload, MemoryFormat format);

}  // namespace b3::experiment
