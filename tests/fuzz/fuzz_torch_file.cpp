// libFuzzer target: the torch.save (.pth) reader (tensor/torch_file.h) on
// arbitrary bytes: the zip container (end records, ZIP64, the central
// directory, local headers, CRCs), then the pickle and the storages. An
// accepted file must keep the promises of torch_file_promises.h; a refused
// one must say why without raw bytes. (Mutations of the pickle mostly fail
// its CRC here; fuzz_torch_pickle fuzzes the pickle inside a valid archive.)
#include <cstdint>
#include <vector>

#include "tests/fuzz/torch_file_promises.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  b3::fuzz::check_torch_file(std::vector<uint8_t>(data, data + size));
  return 0;
}
