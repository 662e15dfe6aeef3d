// open_source / open_data: from a --data argument to train, validation and test sets.
#include "data/sources.h"

#include <filesystem>
#include <iostream>
#include <stdexcept>

#include "data/cifar10_binary.h"
#include "data/download.h"
#include "data/image_folder.h"
#include "data/split.h"
#include "data/synthetic.h"

namespace fs = std::filesystem;

namespace b3 {

namespace {

std::string counts(const DataSource& source) {
  return std::to_string(source.train->size()) + " train / " + std::to_string(source.test->size()) +
         " test images of " + source.train->image_shape().str() + ", " +
         std::to_string(source.train->num_classes()) + " classes";
}

DataSource open_synthetic(const DataOptions& options) {
  DataSource source;
  source.kind = "synthetic";
  source.synthetic = true;
  source.train =
      std::make_shared<SyntheticDataset>(options.synthetic_train_size, options.synthetic_shape,
                                         options.synthetic_classes, options.synthetic_seed, 0);
  // Same seed (same class patterns), later example numbers (different images).
  source.test = std::make_shared<SyntheticDataset>(
      options.synthetic_test_size, options.synthetic_shape, options.synthetic_classes,
      options.synthetic_seed, options.synthetic_train_size);
  source.description = "SYNTHETIC data (seed " + std::to_string(options.synthetic_seed) +
                       ", not CIFAR-10): " + counts(source);
  return source;
}

DataSource open_cifar10_binary(const std::string& dir) {
  DataSource source;
  source.kind = "cifar10-binary";
  source.location = find_cifar10_batches_dir(dir);
  source.train = Cifar10Binary::open(dir, "train");
  source.test = Cifar10Binary::open(dir, "test");
  source.description = "CIFAR-10 binary files in " + source.location + ": " + counts(source);
  return source;
}

DataSource open_image_folders(const std::string& root) {
  DataSource source;
  source.kind = "image-folder";
  source.location = root;
  source.train = ImageFolder::open((fs::path(root) / "train").string());
  source.test = ImageFolder::open((fs::path(root) / "test").string());
  if (source.train->class_names() != source.test->class_names()) {
    throw std::runtime_error("--data '" + root +
                             "': train/ and test/ have different class folders");
  }
  source.description = "image folders in " + root + ": " + counts(source);
  return source;
}

void loud_synthetic_notice(const std::string& why, const DataOptions& options) {
  const std::string rule(78, '=');
  std::cerr << rule << "\n"
            << "b3: NOTICE: no CIFAR-10 data: " << why << "\n"
            << "b3: NOTICE: USING SYNTHETIC DATA INSTEAD. Accuracies are NOT CIFAR-10's.\n"
            << "b3: NOTICE: for the real data run `b3 data download --dir " << options.default_root
            << "` or pass --data <dir>.\n"
            << rule << std::endl;
}

}  // namespace

std::string resolve_data_spec(const std::string& spec, const DataOptions& options) {
  if (!spec.empty()) return spec;
  const std::string found = find_cifar10_batches_dir(options.default_root);
  if (!found.empty()) return found;
  std::string why = "'" + options.default_root + "/cifar-10-batches-bin' does not exist";
  if (options.allow_download) {
    try {
      DownloadOptions download;
      download.dir = options.default_root;
      download.quiet = options.quiet;
      return download_cifar10(download);
    } catch (const std::exception& e) {
      why += ", and the download failed: " + std::string(e.what());
    }
  } else {
    why += " (downloading is off)";
  }
  if (!options.quiet) loud_synthetic_notice(why, options);
  return "synthetic";
}

DataSource open_source(const std::string& given_spec, const DataOptions& options) {
  const std::string spec = resolve_data_spec(given_spec, options);
  if (spec == "synthetic") return open_synthetic(options);
  std::error_code error;
  if (!fs::is_directory(spec, error)) {
    throw std::runtime_error("--data '" + spec +
                             "': no such directory (expected CIFAR-10 binary files, an image "
                             "folder with train/ and test/, or `synthetic`)");
  }
  if (!find_cifar10_batches_dir(spec).empty()) return open_cifar10_binary(spec);
  if (fs::is_directory(fs::path(spec) / "train", error) &&
      fs::is_directory(fs::path(spec) / "test", error)) {
    return open_image_folders(spec);
  }
  throw std::runtime_error("--data '" + spec +
                           "': neither CIFAR-10 binary files (no data_batch_1.bin or "
                           "test_batch.bin, here or in cifar-10-batches-bin/) nor an image "
                           "folder (no train/ and test/ subfolders)");
}

DataSplits open_data(const std::string& spec, const DataOptions& options) {
  if (options.validation_size < 0 || options.train_limit < 0 || options.test_limit < 0) {
    throw std::invalid_argument("open_data: validation size and limits must be >= 0");
  }
  DataSource source = open_source(spec, options);
  DataSplits splits;
  splits.synthetic = source.synthetic;
  std::shared_ptr<const Dataset> train = source.train;
  std::string how = source.description;
  if (options.validation_size > 0) {
    if (options.validation_size >= source.train->size()) {
      throw std::invalid_argument(
          "open_data: the validation size " + std::to_string(options.validation_size) +
          " leaves no training images out of " + std::to_string(source.train->size()));
    }
    auto [train_part, validation] =
        split_train_validation(source.train, options.validation_size, options.seed);
    train = train_part;
    splits.validation = validation;
    how += "; split (seed " + std::to_string(options.seed) + ") into " +
           std::to_string(train_part->size()) + " train / " + std::to_string(validation->size()) +
           " validation";
  }
  // The limits take the first examples of already shuffled (or whole) sets.
  auto limited_train = take_first(train, options.train_limit);
  auto limited_test = take_first(source.test, options.test_limit);
  if (limited_train.get() != train.get()) {
    how += "; training limited to the first " + std::to_string(limited_train->size());
  }
  if (limited_test.get() != source.test.get()) {
    how += "; test limited to the first " + std::to_string(limited_test->size());
  }
  splits.train = limited_train;
  splits.test = limited_test;
  splits.description = how;
  return splits;
}

}  // namespace b3
