// The inference benchmark (`b3 bench-infer`): the throughput of the model's
// forward pass in evaluation mode (BatchNorm on its running statistics,
// dropout off, no autograd graph), what the reference benchmark's "inference
// time" measures, on one synthetic batch already in memory. PyTorch's side is
// experiment/pytorch_step.py --mode eval (model.eval() under
// torch.inference_mode()).
//
// Warm-up forwards first (not timed), then each timed forward on its own;
// the median img/s is the figure. Memory as the step benchmark counts it
// (experiment/step_benchmark.h): (peak RSS - RSS once the model and batch
// exist) / batch.
#pragma once

#include <vector>

#include "experiment/benchmark_workload.h"

namespace b3::experiment {

struct CpuInferenceBenchmark {
  std::vector<double> images_per_second;  // one per timed forward
  double median_images_per_second = 0.0;
  double rss_before_mib = 0.0, peak_rss_mib = 0.0;
  double mib_per_image = 0.0;    // (peak RSS - RSS before) / batch
  double logits_checksum = 0.0;  // the sum of the last forward's logits (to compare runs)
};

// The workload's `steps` are timed forwards after `warmup` untimed ones
// (bench-infer's default batch is 256, the reference's inference batch).
CpuInferenceBenchmark benchmark_cpu_inference(const BenchmarkWorkload& workload);

}  // namespace b3::experiment
