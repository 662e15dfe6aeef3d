// libFuzzer target: the CIFAR-10 binary reader (data/cifar10_binary.h) on
// arbitrary bytes. An input is one folder:
//   byte 0        bit 0 set: the folder has a batches.meta.txt, whose length
//                 is byte 1 and whose bytes follow
//   the rest      test_batch.bin
// A file the reader accepts must give every example: labels below the class
// count and 3,072 pixel bytes each (ASan checks the reads).
#include <cstdint>
#include <exception>
#include <vector>

#include "data/cifar10_binary.h"
#include "tests/fuzz/broken_promise.h"
#include "tests/fuzz/input_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const b3::test::Scratch dir("b3-fuzz");
  size_t at = 1;
  if ((data[0] & 1) != 0) {
    if (size < 2) return 0;
    const size_t meta_bytes = std::min<size_t>(data[1], size - 2);
    b3::fuzz::write_input(dir, "batches.meta.txt", data + 2, meta_bytes);
    at = 2 + meta_bytes;
  }
  b3::fuzz::write_input(dir, "test_batch.bin", data + at, size - at);
  std::shared_ptr<b3::Cifar10Binary> dataset;
  try {
    dataset = b3::Cifar10Binary::open(dir.path.string(), "test");
  } catch (const std::exception& refusal) {
    b3::fuzz::check_refusal(refusal);
    return 0;  // refused with a message: what a reader should do
  }
  if (dataset->size() != static_cast<int64_t>((size - at) / b3::kCifar10RecordBytes))
    b3::fuzz::broken_promise("CIFAR-10: example count is not bytes / 3,073");
  std::vector<uint8_t> pixels(b3::kCifar10ImageBytes);
  for (int64_t i = 0; i < dataset->size(); ++i) {
    const int64_t label = dataset->get(i, pixels.data());
    if (label < 0 || label >= dataset->num_classes() || label != dataset->label(i))
      b3::fuzz::broken_promise("CIFAR-10: a label outside the classes");
  }
  return 0;
}
