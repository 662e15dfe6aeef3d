// The benchmarks' model and synthetic batch (see benchmark_workload.h).
#include "experiment/benchmark_workload.h"

#include "tensor/random.h"

namespace b3::experiment {

MobileNetV3Options benchmark_model(const BenchmarkWorkload& workload) {
  MobileNetV3Options options;
  options.arch = parse_mobilenet_v3_arch(workload.model);
  options.num_classes = workload.classes;
  options.seed = workload.seed;
  return options;
}

LabeledBatch synthetic_batch(const BenchmarkWorkload& workload, MemoryFormat format) {
  Generator gen(workload.seed + 1);
  LabeledBatch batch;
  batch.images = randn({workload.batch_size, 3, workload.image_size, workload.image_size}, gen,
                       TensorOptions(DType::f32).with_format(format));
  batch.labels = randint(workload.classes, {workload.batch_size}, gen);
  return batch;
}

}  // namespace b3::experiment
