// The input-pipeline benchmark: reading, shuffled loading and transforms
// (see data_benchmark.h).
#include "experiment/data_benchmark.h"

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <stdexcept>

#include "data/cifar10_binary.h"
#include "data/loader.h"
#include "data/sources.h"
#include "data/synthetic.h"
#include "data/transforms.h"

namespace fs = std::filesystem;

namespace b3::experiment {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// A temporary CIFAR-10 binary directory of synthetic images, removed on destruction.
class TemporaryCifar {
 public:
  TemporaryCifar() {
    std::string pattern = (fs::temp_directory_path() / "b3-bench-data-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("bench-data: cannot create a temporary directory in " +
                               fs::temp_directory_path().string());
    }
    dir_ = pattern;
    write_cifar10_binary(SyntheticDataset(50000),
                         SyntheticDataset(10000, {32, 32, 3}, 10, 0, 50000), dir_);
  }
  ~TemporaryCifar() {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }
  TemporaryCifar(const TemporaryCifar&) = delete;
  TemporaryCifar& operator=(const TemporaryCifar&) = delete;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

struct TransformCase {
  std::string name;
  TransformOptions options;
};

// The reference benchmark's transforms and the CPU-sized one.
std::vector<TransformCase> transform_cases() {
  TransformOptions nhwc = TransformOptions::reference_train();
  nhwc.format = MemoryFormat::channels_last;
  TransformOptions flip_norm = TransformOptions::reference_train();
  flip_norm.horizontal_flip = true;
  flip_norm.mean = {0.485, 0.456, 0.406};
  flip_norm.std = {0.229, 0.224, 0.225};
  TransformOptions small;  // CPU-sized runs: 32x32, scale only
  return {
      {"transform 32 -> resize 256 -> RandomCrop 224, f32 NCHW",
       TransformOptions::reference_train()},
      {"transform 32 -> resize 256 -> RandomCrop 224, f32 NHWC", nhwc},
      {"transform 32 -> resize 256 -> CenterCrop 224, f32 NCHW",
       TransformOptions::reference_eval()},
      {"  same as the first + flip + normalize", flip_norm},
      {"transform 32x32 (no resize/crop), f32 NCHW", small},
  };
}

// images/s of one transform over `batches`, with a fresh or a reused output.
double transform_rate(const TransformCase& c, const std::vector<Tensor>& batches, bool reuse) {
  Generator gen(0);
  Tensor out;
  int64_t transformed = 0;
  const auto start = Clock::now();
  for (const Tensor& batch : batches) {
    const TransformGeometry g =
        transform_geometry(c.options, batch.size(2), batch.size(3), batch.size(1));
    const std::vector<CropFlip> params = draw_crop_flips(c.options, g, batch.size(0), gen);
    if (!reuse || !out.defined() || out.size(0) != batch.size(0)) {
      out = apply_transform(batch, params, c.options);
    } else {
      apply_transform_into(batch, params, c.options, out);
    }
    transformed += out.size(0);
  }
  return static_cast<double>(transformed) / seconds_since(start);
}

void check_config(const DataBenchmarkConfig& config) {
  if (config.batch_size < 1 || config.workers < 0 || config.epochs < 1 ||
      config.transform_batches < 1) {
    throw std::invalid_argument(
        "bench-data: --batch-size, --epochs and --transform-batches must be >= 1, "
        "--workers >= 0");
  }
}

}  // namespace

DataBenchmark benchmark_data(const DataBenchmarkConfig& config) {
  check_config(config);
  DataBenchmark result;
  std::unique_ptr<TemporaryCifar> temporary;
  std::string dir = config.data;
  if (dir.empty()) {
    dir = find_cifar10_batches_dir("data");
    if (dir.empty()) {
      result.notice =
          "bench-data: no --data and no data/cifar-10-batches-bin: writing 60,000 synthetic "
          "images as CIFAR-10 binary files to a temporary directory";
      temporary = std::make_unique<TemporaryCifar>();
      dir = temporary->dir();
    }
  }
  result.directory = find_cifar10_batches_dir(dir);
  if (result.directory.empty()) {
    throw std::runtime_error("bench-data: --data '" + dir +
                             "' holds no CIFAR-10 binary files (make them with `b3 data "
                             "convert` or `b3 data download`)");
  }

  auto start = Clock::now();
  std::shared_ptr<const Dataset> train = Cifar10Binary::open(dir, "train");
  result.stages.push_back({"read data_batch_1..5.bin (files -> HWC bytes in memory)", train->size(),
                           seconds_since(start)});

  LoaderOptions loader_options;
  loader_options.batch_size = config.batch_size;
  loader_options.shuffle = true;
  loader_options.drop_last = true;
  loader_options.num_workers = config.workers;
  DataLoader loader(train, loader_options);
  int64_t images = 0;
  start = Clock::now();
  for (int64_t epoch = 0; epoch < config.epochs; ++epoch) {
    loader.start_epoch(epoch);
    while (auto batch = loader.next()) images += batch->size();
  }
  result.stages.push_back({"shuffled uint8 batches of " + std::to_string(config.batch_size) + ", " +
                               std::to_string(config.workers) + " workers, " +
                               std::to_string(config.epochs) + " epochs",
                           images, seconds_since(start)});

  // The transforms, on the first few batches (gathered first, so only the transform is timed).
  std::vector<Tensor> batches;
  loader.start_epoch(0);
  for (int64_t b = 0; b < config.transform_batches; ++b) {
    auto batch = loader.next();
    if (!batch) break;
    batches.push_back(batch->images);
  }
  for (const TransformCase& c : transform_cases())
    result.transforms.push_back(
        {c.name, transform_rate(c, batches, false), transform_rate(c, batches, true)});
  return result;
}

}  // namespace b3::experiment
