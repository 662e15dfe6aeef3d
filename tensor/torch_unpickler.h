// A restricted unpickler for the data.pkl of a torch.save file: it reads the
// pickle that describes a state dict and never executes anything.
//
// torch.save (protocol 2) pickles an OrderedDict of tensors as
//
//   GLOBAL 'collections OrderedDict', EMPTY_TUPLE, REDUCE     the dict
//   MARK, then per tensor: BINUNICODE key,
//     GLOBAL 'torch._utils _rebuild_tensor_v2', MARK
//       MARK 'storage', GLOBAL 'torch FloatStorage', key '0', 'cpu', numel
//       TUPLE, BINPERSID                        a storage in the archive
//       offset, (sizes...), (strides...), requires_grad, OrderedDict()
//     TUPLE, REDUCE                             the tensor
//   SETITEMS, then EMPTY_DICT {'_metadata': OrderedDict of per-module versions}
//   BUILD (sets the dict's _metadata attribute), STOP
//
// with BINPUT/LONG_BINPUT memoizing nearly every object and BINGET/LONG_BINGET
// re-using them. The persistent id ('storage', storage type, key, location,
// numel) refers to the archive entry "<archive>/data/<key>"; numel counts the
// storage's elements. This reader accepts the opcodes of protocols 2-4 such
// a pickle can need (PROTO, FRAME, MARK, EMPTY_DICT/LIST/TUPLE, TUPLE/TUPLE1-3,
// BININT/BININT1/BININT2/LONG1, BINUNICODE/SHORT_BINUNICODE/BINUNICODE8,
// BINFLOAT, NEWTRUE/NEWFALSE, NONE, BINPUT/LONG_BINPUT/BINGET/LONG_BINGET/
// MEMOIZE, SETITEM(S), APPEND(S), GLOBAL/STACK_GLOBAL, REDUCE, BUILD,
// BINPERSID, STOP) and builds plain values (None, bool, int, float, str,
// tuple, list, dict) in an arena it owns, so even a cyclic pickle leaks
// nothing. GLOBAL resolves only an allow-list:
//
//   collections.OrderedDict            called with () only: an empty dict
//   torch._utils._rebuild_tensor_v2    (storage, offset, sizes, strides,
//                                      requires_grad, empty hooks): a tensor
//   torch._utils._rebuild_parameter    (tensor, requires_grad, empty hooks)
//   torch.{Float,Double,Half,Long,Int,Byte}Storage   storage types in ids
//
// and any other global is refused with an error naming it (other torch
// storage types, e.g. torch.BFloat16Storage, with the reason: b3 has no such
// dtype). REDUCE applies only those callables; BUILD only sets attributes of
// a dict (ignored). Stack depth, mark nesting, memo size, object count,
// string lengths and the number of ops are bounded. Strings must be UTF-8.
//
// The state dict is the pickled object when it is a dict of tensors, or the
// value under "state_dict" or "model" of a dict holding one (a common
// checkpoint layout). Errors are PickleError; they quote the file's text
// through printable_text and name the byte offset of the op at fault.
#pragma once

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "tensor/dtype.h"
#include "tensor/tensor.h"

namespace b3 {

class PickleError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One tensor of the pickled state dict, as the pickle describes it (values
// not yet checked against the storage: torch_file.cpp does that).
struct TorchTensorInfo {
  DType dtype = DType::f32;
  std::string storage_type;   // "FloatStorage", ...
  std::string storage_key;    // the archive entry "<archive>/data/<storage_key>"
  std::string location;       // where it was saved from: "cpu", "cuda:0", ...
  int64_t storage_numel = 0;  // elements in the storage, as the persistent id says
  int64_t storage_offset = 0;
  Shape shape;
  Shape strides;
  bool requires_grad = false;
};
using TorchTensorInfos = std::vector<std::pair<std::string, TorchTensorInfo>>;

// Bounds on what a pickle may make the reader hold (a state dict of
// torchvision's mobilenet_v3_large needs ~11.5k ops, ~2900 memo entries and
// marks nested 3 deep; the stack holds at most 2 x 1000 items, as pickle
// writes SETITEMS in batches of 1000).
inline constexpr uint64_t kPickleMaxOps = 1ull << 26;
inline constexpr size_t kPickleMaxStack = 1u << 20;
inline constexpr size_t kPickleMaxMarks = 256;
inline constexpr size_t kPickleMaxMemo = 1u << 21;
inline constexpr size_t kPickleMaxObjects = 1u << 21;
inline constexpr uint64_t kPickleMaxStringBytes = 1u << 20;
inline constexpr size_t kPickleMaxDims = 64;

// Reads the state dict described by `pickle` (keys in the pickle's order).
TorchTensorInfos unpickle_torch_state_dict(std::span<const uint8_t> pickle);

}  // namespace b3
