// The input-pipeline benchmark (`b3 bench-data`): how fast b3 reads CIFAR-10
// binary files, shuffles them into uint8 batches on the loader's threads,
// and transforms batches (resize, crop, flip, normalize) as the training
// runs do, in images/s. Without a data directory it writes 60,000
// synthetic images as CIFAR-10 binary files to a temporary directory first
// (removed afterwards), so the files are read as real ones are.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace b3::experiment {

struct DataBenchmarkConfig {
  std::string data;  // a CIFAR-10 binary directory; "" = data/cifar-10-batches-bin, else synthetic
  int64_t batch_size = 128;
  int workers = 2;
  int64_t epochs = 3;             // loader epochs timed
  int64_t transform_batches = 8;  // batches each transform is timed on
};

struct TimedStage {
  std::string what;
  int64_t images = 0;
  double seconds = 0.0;
};

struct TransformRate {
  std::string name;
  double new_output_images_per_second = 0.0;     // a fresh output tensor per batch
  double reused_output_images_per_second = 0.0;  // one output tensor reused
};

struct DataBenchmark {
  std::string notice;     // why synthetic files were written ("" when not)
  std::string directory;  // the CIFAR-10 binary files read
  std::vector<TimedStage> stages;
  std::vector<TransformRate> transforms;
};

// Throws std::invalid_argument for sizes below 1 (workers below 0), and
// std::runtime_error when `data` holds no CIFAR-10 binary files.
DataBenchmark benchmark_data(const DataBenchmarkConfig& config);

}  // namespace b3::experiment
