// Reading and writing the CIFAR-10 binary format (see cifar10_binary.h).
#include "data/cifar10_binary.h"

#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>

#include "data/files.h"

namespace fs = std::filesystem;

namespace b3 {

namespace {

constexpr int64_t kPlane = kCifar10ImageSide * kCifar10ImageSide;  // 1,024 pixels
constexpr const char* kMetaFile = "batches.meta.txt";

std::string join(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}

// Class names from batches.meta.txt (one per line, blank lines ignored).
std::vector<std::string> read_class_names(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file_bytes(path, "CIFAR-10 binary");
  std::vector<std::string> names;
  std::string line;
  auto finish_line = [&] {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) names.push_back(line);
    line.clear();
  };
  for (uint8_t byte : bytes) {
    if (byte == '\n') {
      finish_line();
    } else {
      line.push_back(static_cast<char>(byte));
    }
  }
  finish_line();
  if (names.empty() || static_cast<int64_t>(names.size()) > kCifar10MaxClasses) {
    throw std::runtime_error("CIFAR-10 binary: '" + path + "' names " +
                             std::to_string(names.size()) +
                             " classes; expected 1 to 10 class names, one per line");
  }
  return names;
}

// R, G, B planes of one record -> HWC bytes.
void planes_to_hwc(const uint8_t* planes, uint8_t* hwc) {
  for (int64_t p = 0; p < kPlane; ++p) {
    hwc[3 * p + 0] = planes[p];
    hwc[3 * p + 1] = planes[kPlane + p];
    hwc[3 * p + 2] = planes[2 * kPlane + p];
  }
}

void hwc_to_planes(const uint8_t* hwc, uint8_t* planes) {
  for (int64_t p = 0; p < kPlane; ++p) {
    planes[p] = hwc[3 * p + 0];
    planes[kPlane + p] = hwc[3 * p + 1];
    planes[2 * kPlane + p] = hwc[3 * p + 2];
  }
}

}  // namespace

const std::vector<std::string>& cifar10_class_names() {
  static const std::vector<std::string> names{"airplane", "automobile", "bird",  "cat",  "deer",
                                              "dog",      "frog",       "horse", "ship", "truck"};
  return names;
}

std::vector<std::string> cifar10_batch_file_names(const std::string& split) {
  if (split == "train") {
    return {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
            "data_batch_5.bin"};
  }
  if (split == "test") return {"test_batch.bin"};
  throw std::invalid_argument("CIFAR-10 binary: split '" + split +
                              "' is not one of \"train\", \"test\"");
}

std::string find_cifar10_batches_dir(const std::string& dir) {
  auto has_batches = [](const fs::path& d) {
    std::error_code error;
    return fs::is_regular_file(d / "data_batch_1.bin", error) ||
           fs::is_regular_file(d / "test_batch.bin", error);
  };
  if (has_batches(dir)) return dir;
  const fs::path nested = fs::path(dir) / "cifar-10-batches-bin";
  if (has_batches(nested)) return nested.string();
  return {};
}

std::shared_ptr<Cifar10Binary> Cifar10Binary::open(const std::string& dir,
                                                   const std::string& split) {
  const std::vector<std::string> names = cifar10_batch_file_names(split);
  std::error_code error;
  if (!fs::is_directory(dir, error)) {
    throw std::runtime_error("CIFAR-10 binary: directory '" + dir +
                             "' does not exist (run `b3 data download` or pass --data <dir>)");
  }
  std::string batches_dir = find_cifar10_batches_dir(dir);
  if (batches_dir.empty()) batches_dir = dir;  // the missing file is then named below
  std::vector<std::string> paths;
  for (const std::string& name : names) {
    const std::string path = join(batches_dir, name);
    if (!fs::is_regular_file(path, error)) {
      throw std::runtime_error(
          "CIFAR-10 binary: missing batch file '" + path + "' (the " + split + " split needs " +
          std::to_string(names.size()) + " file" +
          (names.size() > 1 ? "s: data_batch_1.bin ... data_batch_5.bin)" : ": test_batch.bin)"));
    }
    paths.push_back(path);
  }
  const std::string meta = join(batches_dir, kMetaFile);
  std::vector<std::string> class_names =
      fs::is_regular_file(meta, error) ? read_class_names(meta) : cifar10_class_names();
  return from_files(paths, std::move(class_names));
}

std::shared_ptr<Cifar10Binary> Cifar10Binary::from_files(const std::vector<std::string>& paths,
                                                         std::vector<std::string> class_names) {
  if (class_names.empty() || static_cast<int64_t>(class_names.size()) > kCifar10MaxClasses) {
    throw std::invalid_argument("CIFAR-10 binary: expected 1 to 10 class names, got " +
                                std::to_string(class_names.size()));
  }
  auto dataset = std::shared_ptr<Cifar10Binary>(new Cifar10Binary());
  dataset->files_ = paths;
  dataset->class_names_ = std::move(class_names);
  const int64_t num_classes = static_cast<int64_t>(dataset->class_names_.size());
  // Reserve for all files at once (sizes are checked again as each is read).
  int64_t expected_records = 0;
  for (const std::string& path : paths) {
    std::error_code error;
    const auto nbytes = fs::file_size(path, error);
    if (!error) expected_records += static_cast<int64_t>(nbytes) / kCifar10RecordBytes;
  }
  dataset->labels_.reserve(static_cast<size_t>(expected_records));
  dataset->pixels_.reserve(static_cast<size_t>(expected_records * kCifar10ImageBytes));
  for (const std::string& path : paths) {
    const std::vector<uint8_t> bytes = read_file_bytes(path, "CIFAR-10 binary");
    const int64_t nbytes = static_cast<int64_t>(bytes.size());
    if (nbytes == 0) {
      throw std::runtime_error("CIFAR-10 binary: '" + path +
                               "' is empty (expected records of 3,073 bytes)");
    }
    if (nbytes % kCifar10RecordBytes != 0) {
      throw std::runtime_error("CIFAR-10 binary: '" + path + "' has " + std::to_string(nbytes) +
                               " bytes, not a multiple of the 3,073-byte record (1 label byte + "
                               "3,072 pixel bytes): the file is truncated or not CIFAR-10");
    }
    const int64_t records = nbytes / kCifar10RecordBytes;
    for (int64_t r = 0; r < records; ++r) {
      const int64_t label = bytes[static_cast<size_t>(r * kCifar10RecordBytes)];
      if (label >= num_classes) {
        throw std::runtime_error("CIFAR-10 binary: '" + path + "' record " + std::to_string(r) +
                                 " (byte offset " + std::to_string(r * kCifar10RecordBytes) +
                                 ") has label " + std::to_string(label) + "; labels must be 0 to " +
                                 std::to_string(num_classes - 1));
      }
    }
    const size_t first = dataset->labels_.size();
    dataset->labels_.resize(first + static_cast<size_t>(records));
    dataset->pixels_.resize(dataset->labels_.size() * kCifar10ImageBytes);
#pragma omp parallel for if (records > 256)
    for (int64_t r = 0; r < records; ++r) {
      const uint8_t* record = bytes.data() + r * kCifar10RecordBytes;
      dataset->labels_[first + static_cast<size_t>(r)] = record[0];
      planes_to_hwc(record + 1, dataset->pixels_.data() +
                                    (first + static_cast<size_t>(r)) * kCifar10ImageBytes);
    }
  }
  return dataset;
}

int64_t Cifar10Binary::get(int64_t index, uint8_t* pixels) const {
  check_index("Cifar10Binary::get", index, size());
  std::memcpy(pixels, pixels_.data() + index * kCifar10ImageBytes, kCifar10ImageBytes);
  return labels_[static_cast<size_t>(index)];
}

int64_t Cifar10Binary::label(int64_t index) const {
  check_index("Cifar10Binary::label", index, size());
  return labels_[static_cast<size_t>(index)];
}

namespace {

// Writes the records into "<path>.partial" files and returns their writers,
// not yet committed: the caller commits once everything was written.
std::vector<std::unique_ptr<AtomicFileWriter>> write_records(
    const Dataset& dataset, const std::vector<std::string>& paths) {
  const ImageShape shape = dataset.image_shape();
  if (!(shape == ImageShape{32, 32, 3})) {
    throw std::invalid_argument("CIFAR-10 binary writer: images are " + shape.str() +
                                "; the format holds 32x32x3 images only");
  }
  if (dataset.num_classes() > kCifar10MaxClasses) {
    throw std::invalid_argument("CIFAR-10 binary writer: the dataset has " +
                                std::to_string(dataset.num_classes()) +
                                " classes; the format holds labels 0 to 9 only");
  }
  if (paths.empty()) throw std::invalid_argument("CIFAR-10 binary writer: no output files");
  const int64_t n = dataset.size();
  const int64_t files = static_cast<int64_t>(paths.size());
  std::vector<std::unique_ptr<AtomicFileWriter>> writers;
  for (const std::string& path : paths) {
    writers.push_back(std::make_unique<AtomicFileWriter>(path, "CIFAR-10 binary writer"));
  }
  std::vector<uint8_t> hwc(kCifar10ImageBytes);
  std::vector<uint8_t> record(kCifar10RecordBytes);
  int64_t index = 0;
  for (int64_t f = 0; f < files; ++f) {
    const int64_t count = n / files + (f < n % files ? 1 : 0);
    for (int64_t k = 0; k < count; ++k, ++index) {
      const int64_t label = dataset.get(index, hwc.data());
      if (label < 0 || label >= kCifar10MaxClasses) {
        throw std::invalid_argument("CIFAR-10 binary writer: example " + std::to_string(index) +
                                    " has label " + std::to_string(label) +
                                    "; the format holds labels 0 to 9 only");
      }
      record[0] = static_cast<uint8_t>(label);
      hwc_to_planes(hwc.data(), record.data() + 1);
      writers[static_cast<size_t>(f)]->write(record.data(), record.size());
    }
  }
  return writers;
}

}  // namespace

void write_cifar10_batches(const Dataset& dataset, const std::vector<std::string>& paths) {
  for (auto& writer : write_records(dataset, paths)) writer->commit();
}

void write_cifar10_binary(const Dataset& train, const Dataset& test, const std::string& dir) {
  const std::vector<std::string> train_names = cifar10_batch_file_names("train");
  if (train.size() < static_cast<int64_t>(train_names.size())) {
    throw std::invalid_argument("CIFAR-10 binary writer: the training set has " +
                                std::to_string(train.size()) +
                                " images; data_batch_1..5.bin need at least 5");
  }
  if (test.size() < 1) {
    throw std::invalid_argument("CIFAR-10 binary writer: the test set is empty");
  }
  if (train.class_names() != test.class_names()) {
    throw std::invalid_argument(
        "CIFAR-10 binary writer: the training and test sets have different classes");
  }
  std::error_code error;
  fs::create_directories(dir, error);
  if (!fs::is_directory(dir, error)) {
    throw std::runtime_error("CIFAR-10 binary writer: cannot create directory '" + dir + "'");
  }
  std::vector<std::string> train_paths;
  for (const std::string& name : train_names) train_paths.push_back(join(dir, name));
  auto writers = write_records(train, train_paths);
  for (auto& writer : write_records(test, {join(dir, "test_batch.bin")})) {
    writers.push_back(std::move(writer));
  }
  writers.push_back(
      std::make_unique<AtomicFileWriter>(join(dir, kMetaFile), "CIFAR-10 binary writer"));
  for (const std::string& name : train.class_names()) {
    writers.back()->write(name.data(), name.size());
    writers.back()->write("\n", 1);
  }
  writers.back()->write("\n", 1);
  // Everything is written: now the files appear, each complete.
  for (auto& writer : writers) writer->commit();
}

}  // namespace b3
