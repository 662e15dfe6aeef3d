// `b3 data download|convert|info` and `b3 bench-data`: fetching CIFAR-10,
// turning an image folder into CIFAR-10 binary files, describing a data
// directory (data/), and measuring how fast the input pipeline is
// (experiment/data_benchmark.h). This file parses the options and prints.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "data/convert.h"
#include "data/download.h"
#include "data/sources.h"
#include "experiment/data_benchmark.h"

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

void print_rate(const std::string& what, int64_t images, double seconds) {
  std::printf("  %-62s %8.3f s %12.0f img/s\n", what.c_str(), seconds,
              static_cast<double>(images) / seconds);
}

void run_bench(const experiment::DataBenchmarkConfig& config) {
  const experiment::DataBenchmark result = experiment::benchmark_data(config);
  if (!result.notice.empty()) std::printf("%s\n", result.notice.c_str());
  std::printf("bench-data: CIFAR-10 binary files in %s; %d OpenMP threads, %u hardware threads\n",
              result.directory.c_str(), omp_get_max_threads(), std::thread::hardware_concurrency());
  for (const experiment::TimedStage& stage : result.stages)
    print_rate(stage.what, stage.images, stage.seconds);
  std::printf("  %-62s %21s %21s\n", "", "new output tensor", "reused output tensor");
  for (const experiment::TransformRate& t : result.transforms) {
    std::printf("  %-62s %15.0f img/s %15.0f img/s\n", t.name.c_str(),
                t.new_output_images_per_second, t.reused_output_images_per_second);
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
  auto args = std::make_shared<experiment::DataBenchmarkConfig>();
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
  bench->callback([args] { run_bench(*args); });
}

}  // namespace b3::cli
