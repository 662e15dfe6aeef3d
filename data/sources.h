// Where training data comes from: the one function every command that trains
// calls with its --data argument.
//
//   --data <dir>        CIFAR-10 binary files (the cifar-10-batches-bin folder
//                       or its parent), or an image folder with train/ and
//                       test/ inside (one subfolder per class in each)
//   --data synthetic    SyntheticDataset (offline, for tests and smoke runs)
//   (nothing)           <root>/cifar-10-batches-bin if it is there, else try
//                       `b3 data download`, else synthetic data with a loud
//                       notice on stderr
//
// The training files are split seeded into train and validation (45,000 /
// 5,000 for CIFAR-10, as the reference); the test files are the test set.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "data/dataset.h"

namespace b3 {

struct DataOptions {
  int64_t validation_size = 5000;  // taken from the training files; 0: no validation set
  uint64_t seed = 0;               // of the train/validation split
  int64_t train_limit = 0;         // keep only the first N training examples (0: all)
  int64_t test_limit = 0;          // keep only the first N test examples (0: all)
  // Synthetic data: sizes of the "training files" and the test set, image shape, classes.
  int64_t synthetic_train_size = 50000;
  int64_t synthetic_test_size = 10000;
  ImageShape synthetic_shape{32, 32, 3};
  int64_t synthetic_classes = 10;
  uint64_t synthetic_seed = 0;
  // The default ("" spec): where to look for cifar-10-batches-bin and download to.
  std::string default_root = "data";
  bool allow_download = true;
  // No notices on stderr (the synthetic-data notice, download progress): the
  // ranks other than 0 of a data-parallel job.
  bool quiet = false;
};

// The files as they are: the whole training set and the test set.
struct DataSource {
  std::shared_ptr<const Dataset> train;
  std::shared_ptr<const Dataset> test;
  std::string kind;         // "cifar10-binary", "image-folder" or "synthetic"
  std::string location;     // the directory read (empty for synthetic)
  std::string description;  // one line, for logs and reports
  bool synthetic = false;
};

// The three sets a training run uses.
struct DataSplits {
  // Datasets are read-only (every method is const), hence const pointers.
  std::shared_ptr<const Dataset> train, validation, test;  // validation: null when size 0
  std::string description;  // what was read and how it was split, one line
  bool synthetic = false;
};

// What `spec` names: itself unless it is empty; for "" the CIFAR-10 directory
// found under options.default_root (downloaded there first when it is missing
// and downloading is allowed), else "synthetic" after the loud notice. A sweep
// resolves its --data once so that its runs neither look nor download again
// nor repeat the notice.
std::string resolve_data_spec(const std::string& spec, const DataOptions& options = {});

// Opens `spec` (see above) without splitting. Errors name the path: a missing
// directory, a directory that is neither format, and every error of the readers.
DataSource open_source(const std::string& spec, const DataOptions& options = {});

// open_source + the seeded train/validation split + the limits.
DataSplits open_data(const std::string& spec, const DataOptions& options = {});

}  // namespace b3
