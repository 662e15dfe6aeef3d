// libFuzzer target: the restricted unpickler of torch files
// (tensor/torch_unpickler.h) on arbitrary data.pkl bytes, placed in a valid
// torch.save archive (correct CRCs) beside the storages of the sample state
// dict of tests/support/torch_file_builder.h, so that every mutation reaches
// the pickle: opcodes, the allow-list of globals, memo, marks, persistent
// ids, tensor geometry against the storages. Accepted files keep the
// promises of torch_file_promises.h; refusals carry no raw bytes.
#include <cstdint>
#include <vector>

#include "tests/fuzz/torch_file_promises.h"
#include "tests/support/torch_file_builder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<b3::test::StorageEntry> storages = b3::test::sample_storages();
  b3::fuzz::check_torch_file(
      b3::test::torch_zip(std::vector<uint8_t>(data, data + size), storages));
  return 0;
}
