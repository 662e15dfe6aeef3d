// libFuzzer target: the safetensors reader (tensor/safetensors.h) on
// arbitrary bytes: header length, header JSON, dtypes, shapes, offsets,
// overlaps and sizes. An accepted file must hold tensors whose bytes are
// readable (ASan checks) and must survive a round trip: encoding what was
// read and reading it again gives the same names, dtypes, shapes, bytes and
// metadata.
#include <cstdint>
#include <cstring>
#include <exception>
#include <vector>

#include "tensor/safetensors.h"
#include "tests/fuzz/broken_promise.h"

namespace {

bool same_tensor(const b3::Tensor& a, const b3::Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> bytes(data, data + size);
  b3::SafetensorsFile file;
  try {
    file = b3::decode_safetensors(bytes, "fuzz input");
  } catch (const std::exception& refusal) {
    b3::fuzz::check_refusal(refusal);
    return 0;
  }
  const std::vector<uint8_t> encoded = b3::encode_safetensors(file.tensors, file.metadata);
  const b3::SafetensorsFile again = b3::decode_safetensors(encoded, "re-encoded fuzz input");
  if (again.tensors.size() != file.tensors.size() || again.metadata != file.metadata)
    b3::fuzz::broken_promise("safetensors: the round trip changed the names or metadata");
  for (size_t i = 0; i < file.tensors.size(); ++i) {
    if (again.tensors[i].first != file.tensors[i].first ||
        !same_tensor(again.tensors[i].second, file.tensors[i].second))
      b3::fuzz::broken_promise("safetensors: the round trip changed a tensor");
  }
  return 0;
}
