// Reading and writing the safetensors format (huggingface/safetensors), the
// ecosystem's standard file for named tensors:
//
//   bytes 0..7   N, the header length, unsigned 64-bit little-endian
//   bytes 8..    N bytes of UTF-8 JSON: {"<name>": {"dtype": "F32", "shape": [2, 3],
//                "data_offsets": [begin, end]}, ..., "__metadata__": {"key": "value"}}
//                (padded with spaces; offsets count from the end of the header)
//   then         the tensors' raw bytes, little-endian, row-major (logical order)
//
// b3 reads and writes F64, F32, F16, I64, I32 and U8. Names are kept as given
// (torchvision's state_dict keys, so files carry over between PyTorch and b3),
// and tensors come back in the file's header order.
//
// Every problem is an error naming the file and, where there is one, the
// tensor: a bad or truncated header, offsets out of range or overlapping, a
// byte count that does not match the shape, an unknown dtype. A save writes a
// temporary file next to the target and renames it over the target only when
// complete, so a crash or a full disk never leaves a half-written file.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace b3 {

// Named tensors in order (the same alias as in optim/optimizer.h).
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
using SafetensorsMetadata = std::map<std::string, std::string>;

struct SafetensorsFile {
  NamedTensors tensors;          // CPU tensors, dense row-major, in header order
  SafetensorsMetadata metadata;  // the "__metadata__" strings (may be empty)

  // The tensor called `name`; throws, naming `name` and the file, if absent.
  const Tensor& at(const std::string& name) const;
  bool contains(const std::string& name) const;
  std::string source;  // the path it was read from, for messages
};

// The safetensors name of a dtype ("F32", ...) and back; unknown names throw.
const char* safetensors_dtype_name(DType dtype);
DType parse_safetensors_dtype(const std::string& name);

// Encodes `tensors` (any layout, CPU or CUDA; written in logical row-major
// order) with `metadata`. Names must be unique, non-empty and not "__metadata__".
std::vector<uint8_t> encode_safetensors(const NamedTensors& tensors,
                                        const SafetensorsMetadata& metadata = {});
// Decodes a whole file's bytes; `source` names it in error messages.
SafetensorsFile decode_safetensors(const std::vector<uint8_t>& bytes, const std::string& source);

// Writes `path` atomically (temporary file in the same folder, then rename).
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const SafetensorsMetadata& metadata = {});

// The temporary save_safetensors writes a file under is named
// "<file>.tmp.<pid>.<n>" (pid: the writing process). For a file name of that
// form: the file's name and the writer's pid (a save killed before its rename
// leaves one behind); otherwise nothing.
struct SaveTemporary {
  std::string target;
  int64_t writer_pid = 0;
};
std::optional<SaveTemporary> parse_save_temporary(const std::string& file_name);
SafetensorsFile load_safetensors(const std::string& path);

}  // namespace b3
