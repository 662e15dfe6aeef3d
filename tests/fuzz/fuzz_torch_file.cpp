// libFuzzer target: the torch.save (.pth) reader (tensor/torch_file.h) on
// arbitrary bytes: the zip container (end records, ZIP64, the central
// directory, local headers, CRCs), then the pickle and the storages. An
// accepted file must keep the promises of torch_file_promises.h; a refused
// one must say why without raw bytes. (Mutations of the pickle mostly fail
// its CRC here; fuzz_torch_pickle fuzzes the pickle inside a valid archive.)
#include <cstdint>
#include <exception>
#include <vector>

#include "tensor/torch_file.h"
#include "tests/fuzz/broken_promise.h"
#include "tests/fuzz/torch_file_promises.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> bytes(data, data + size);
  b3::NamedTensors tensors;
  try {
    tensors = b3::decode_torch_state_dict(bytes, "fuzz input");
  } catch (const std::exception& refusal) {
    b3::fuzz::check_refusal(refusal);
    return 0;
  }
  b3::fuzz::check_accepted_torch_file(bytes, tensors);
  return 0;
}
