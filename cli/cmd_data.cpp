// `b3 data download|convert|info` and `b3 bench-data`: fetching CIFAR-10,
// turning an image folder into CIFAR-10 binary files, describing a data
// directory, and measuring how fast the input pipeline is.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "data/cifar10_binary.h"
#include "data/convert.h"
#include "data/download.h"
#include "data/loader.h"
#include "data/sources.h"
#include "data/synthetic.h"
#include "data/transforms.h"

namespace fs = std::filesystem;

namespace b3::cli {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// --- data info ---

void print_info(const std::string& spec) {
  DataOptions options;
  options.allow_download = false;
  const DataSource source = open_source(spec, options);
  std::printf("data:       %s\n", source.description.c_str());
  std::printf("format:     %s\n", source.kind.c_str());
  std::printf("image size: %lldx%lld pixels, %lld channels\n",
              static_cast<long long>(source.train->image_shape().height),
              static_cast<long long>(source.train->image_shape().width),
              static_cast<long long>(source.train->image_shape().channels));
  const std::vector<int64_t> train = count_per_class(*source.train);
  const std::vector<int64_t> test = count_per_class(*source.test);
  const std::vector<std::string> names = source.train->class_names();
  std::printf("%-4s %-16s %10s %10s\n", "", "class", "train", "test");
  for (size_t c = 0; c < names.size(); ++c) {
    std::printf("%-4zu %-16s %10lld %10lld\n", c, names[c].c_str(),
                static_cast<long long>(train[c]),
                static_cast<long long>(c < test.size() ? test[c] : 0));
  }
  std::printf("%-4s %-16s %10lld %10lld\n", "", "total",
              static_cast<long long>(source.train->size()),
              static_cast<long long>(source.test->size()));
  if (source.train->size() > options.validation_size) {
    std::printf(
        "training runs split the %lld training images seeded into %lld train / %lld "
        "validation\n",
        static_cast<long long>(source.train->size()),
        static_cast<long long>(source.train->size() - options.validation_size),
        static_cast<long long>(options.validation_size));
  }
}

// --- bench-data ---

struct BenchArgs {
  std::string data;
  int64_t batch_size = 128;
  int workers = 2;
  int64_t epochs = 3;
  int64_t transform_batches = 8;
};

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
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

void print_rate(const std::string& what, int64_t images, double seconds) {
  std::printf("  %-62s %8.3f s %12.0f img/s\n", what.c_str(), seconds,
              static_cast<double>(images) / seconds);
}

void run_bench(const BenchArgs& args) {
  std::unique_ptr<TemporaryCifar> temporary;
  std::string dir = args.data;
  if (dir.empty()) {
    dir = find_cifar10_batches_dir("data");
    if (dir.empty()) {
      std::printf(
          "bench-data: no --data and no data/cifar-10-batches-bin: writing 60,000 "
          "synthetic images as CIFAR-10 binary files to a temporary directory\n");
      temporary = std::make_unique<TemporaryCifar>();
      dir = temporary->dir();
    }
  }
  if (find_cifar10_batches_dir(dir).empty()) {
    throw std::runtime_error("bench-data: --data '" + dir +
                             "' holds no CIFAR-10 binary files (make them with `b3 data "
                             "convert` or `b3 data download`)");
  }
  std::printf("bench-data: CIFAR-10 binary files in %s; %d OpenMP threads, %u hardware threads\n",
              find_cifar10_batches_dir(dir).c_str(), omp_get_max_threads(),
              std::thread::hardware_concurrency());

  auto start = Clock::now();
  std::shared_ptr<const Dataset> train = Cifar10Binary::open(dir, "train");
  print_rate("read data_batch_1..5.bin (files -> HWC bytes in memory)", train->size(),
             seconds_since(start));

  LoaderOptions loader_options;
  loader_options.batch_size = args.batch_size;
  loader_options.shuffle = true;
  loader_options.drop_last = true;
  loader_options.num_workers = args.workers;
  DataLoader loader(train, loader_options);
  int64_t images = 0;
  start = Clock::now();
  for (int64_t epoch = 0; epoch < args.epochs; ++epoch) {
    loader.start_epoch(epoch);
    while (auto batch = loader.next()) images += batch->size();
  }
  print_rate("shuffled uint8 batches of " + std::to_string(args.batch_size) + ", " +
                 std::to_string(args.workers) + " workers, " + std::to_string(args.epochs) +
                 " epochs",
             images, seconds_since(start));

  // The transforms, on the first few batches (gathered first, so only the transform is timed).
  std::vector<Tensor> batches;
  loader.start_epoch(0);
  for (int64_t b = 0; b < args.transform_batches; ++b) {
    auto batch = loader.next();
    if (!batch) break;
    batches.push_back(batch->images);
  }
  struct Case {
    std::string name;
    TransformOptions options;
  };
  TransformOptions nhwc = TransformOptions::reference_train();
  nhwc.format = MemoryFormat::channels_last;
  TransformOptions flip_norm = TransformOptions::reference_train();
  flip_norm.horizontal_flip = true;
  flip_norm.mean = {0.485, 0.456, 0.406};
  flip_norm.std = {0.229, 0.224, 0.225};
  TransformOptions small;  // CPU-sized runs: 32x32, scale only
  const std::vector<Case> cases{
      {"transform 32 -> resize 256 -> RandomCrop 224, f32 NCHW",
       TransformOptions::reference_train()},
      {"transform 32 -> resize 256 -> RandomCrop 224, f32 NHWC", nhwc},
      {"transform 32 -> resize 256 -> CenterCrop 224, f32 NCHW",
       TransformOptions::reference_eval()},
      {"  same as the first + flip + normalize", flip_norm},
      {"transform 32x32 (no resize/crop), f32 NCHW", small},
  };
  std::printf("  %-62s %21s %21s\n", "", "new output tensor", "reused output tensor");
  for (const Case& c : cases) {
    double rates[2];
    for (int reuse = 0; reuse < 2; ++reuse) {
      Generator gen(0);
      Tensor out;
      int64_t transformed = 0;
      start = Clock::now();
      for (const Tensor& batch : batches) {
        const TransformGeometry g =
            transform_geometry(c.options, batch.size(2), batch.size(3), batch.size(1));
        const std::vector<CropFlip> params = draw_crop_flips(c.options, g, batch.size(0), gen);
        if (reuse == 0 || !out.defined() || out.size(0) != batch.size(0)) {
          out = apply_transform(batch, params, c.options);
        } else {
          apply_transform_into(batch, params, c.options, out);
        }
        transformed += out.size(0);
      }
      rates[reuse] = static_cast<double>(transformed) / seconds_since(start);
    }
    std::printf("  %-62s %15.0f img/s %15.0f img/s\n", c.name.c_str(), rates[0], rates[1]);
  }
}

}  // namespace

void register_data_commands(CLI::App& app) {
  CLI::App* data = app.add_subcommand("data", "get, convert and describe data sets");
  data->require_subcommand(1);

  auto* download = data->add_subcommand(
      "download", "download the official CIFAR-10 binary archive, check its MD5, unpack it");
  auto download_dir = std::make_shared<std::string>("data");
  download->add_option("--dir", *download_dir, "where the archive and cifar-10-batches-bin/ go")
      ->capture_default_str();
  download->callback([download_dir] {
    DownloadOptions options;
    options.dir = *download_dir;
    const std::string path = download_cifar10(options);
    std::cout << "CIFAR-10 binary files are in " << path << "\n";
  });

  auto* convert = data->add_subcommand(
      "convert", "write an image folder (train/ and test/, 32x32 images) as CIFAR-10 binary files");
  auto from = std::make_shared<std::string>();
  auto to = std::make_shared<std::string>();
  convert->add_option("--from", *from, "image folder root with train/ and test/")->required();
  convert->add_option("--to", *to, "output directory for the .bin files")->required();
  convert->callback([from, to] {
    const auto start = Clock::now();
    const ConvertSummary summary = convert_image_folder_to_cifar10(*from, *to);
    std::printf(
        "wrote %lld train images (data_batch_1..5.bin) and %lld test images "
        "(test_batch.bin), %zu classes, to %s in %.1f s\n",
        static_cast<long long>(summary.train_images), static_cast<long long>(summary.test_images),
        summary.class_names.size(), summary.output_dir.c_str(), seconds_since(start));
  });

  auto* info = data->add_subcommand(
      "info", "images per split and per class, and the image size, of a data directory");
  auto info_data = std::make_shared<std::string>();
  info->add_option("--data", *info_data,
                   "CIFAR-10 binary dir, image folder (train/ and test/), or `synthetic`")
      ->required();
  info->callback([info_data] { print_info(*info_data); });

  auto* bench = app.add_subcommand(
      "bench-data", "images/s of the input pipeline: reading, shuffling, transforming");
  auto args = std::make_shared<BenchArgs>();
  bench->add_option("--data", args->data,
                    "CIFAR-10 binary directory (default: data/cifar-10-batches-bin, else "
                    "synthetic files in a temporary directory)");
  bench->add_option("--batch-size", args->batch_size, "loader batch size")->capture_default_str();
  bench->add_option("--workers", args->workers, "loader threads")->capture_default_str();
  bench->add_option("--epochs", args->epochs, "loader epochs to time")->capture_default_str();
  bench
      ->add_option("--transform-batches", args->transform_batches,
                   "batches to time each transform on")
      ->capture_default_str();
  bench->callback([args] {
    if (args->batch_size < 1 || args->workers < 0 || args->epochs < 1 ||
        args->transform_batches < 1) {
      throw std::invalid_argument(
          "bench-data: --batch-size, --epochs and --transform-batches must be >= 1, "
          "--workers >= 0");
    }
    run_bench(*args);
  });
}

}  // namespace b3::cli
