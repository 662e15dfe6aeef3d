// Reading PyTorch's .pth state dicts (torch.save's zip format, PyTorch >=
// 1.6), e.g. torchvision's pretrained weights or torch.save(model.state_dict()),
// into b3 tensors, without running anything from the file.
//
// A torch.save file is a zip archive (tensor/zip_archive.h) of STORED entries,
// all under one folder, the "archive name" (torch 1.13: the file's name
// without its extension; later versions: "archive"):
//
//   <archive>/data.pkl     the pickled object (tensor/torch_unpickler.h): here
//                          a dict of tensors, each a view (dtype, sizes,
//                          strides, storage offset) of a storage
//   <archive>/data/<key>   each storage's raw bytes, little-endian, numel x
//                          element size
//   <archive>/version      the format version ("3"); <archive>/byteorder
//                          ("little"; newer PyTorch) when present is checked
//
// Tensors come back dense, row-major, on the CPU, in the pickle's key order,
// copied from their storages honouring shape, strides and offset (tensors
// that share a storage become separate copies, which is what
// load_state_dict(model, ...) needs). Dtypes: f32, f64, f16, i64 (e.g.
// BatchNorm's num_batches_tracked), i32, u8; others are refused by name.
//
// Every problem is a std::runtime_error "torch file '<source>': ..." saying
// what is wrong, quoting the file only through printable_text, and nothing is
// returned half-built: an empty file, a legacy (pre-1.6, non-zip) torch.save
// file (with how to convert it), a bad zip, a zip without <archive>/data.pkl,
// a pickle that names anything outside the allow-list, a missing storage, a
// storage whose byte size is not numel x element size, a tensor reaching
// outside its storage, negative sizes, strides or offsets, overflow.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tensor/safetensors.h"
#include "tensor/torch_unpickler.h"

namespace b3 {

// The state dict of a torch.save file's bytes; `source` names it in messages.
NamedTensors decode_torch_state_dict(const std::vector<uint8_t>& bytes, const std::string& source);
// The same for a file on disk.
NamedTensors load_torch_state_dict(const std::string& path);

// What the file holds, with every check decode makes, but no data copied:
// each tensor's key, b3 dtype (dtype_name(info.dtype) is "f32", ...), shape,
// strides, storage offset and storage.
TorchTensorInfos list_torch_state_dict(const std::vector<uint8_t>& bytes,
                                       const std::string& source);

// One line per tensor, "<key> <dtype> <shape>", e.g.
// "features.0.0.weight f32 [16, 3, 3, 3]", keys passed through printable_text.
std::string format_torch_tensor_list(const TorchTensorInfos& tensors);

}  // namespace b3
