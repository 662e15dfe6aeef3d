// torch.save files (see torch_file.h): the zip archive, then data.pkl through
// the restricted unpickler, then each tensor checked against its storage
// entry and copied out as a dense row-major b3 Tensor.
#include "tensor/torch_file.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <span>
#include <stdexcept>

#include "tensor/file_bytes.h"
#include "tensor/printable_text.h"
#include "tensor/zip_archive.h"

namespace b3 {

static_assert(std::endian::native == std::endian::little,
              "torch.save stores little-endian data; b3 copies bytes as they are");

namespace {

// What a legacy (pre-1.6) torch.save file starts with: PROTO 2, then LONG1
// of 10 bytes holding the magic number 0x1950a86a20f9469cfc6c.
constexpr uint8_t kLegacyMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c,
                                    0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw std::runtime_error("torch file '" + printable_text(source) + "': " + what);
}

// a * b and a + b, or false on int64 overflow.
bool mul(int64_t a, int64_t b, int64_t& out) { return !__builtin_mul_overflow(a, b, &out); }
bool add(int64_t a, int64_t b, int64_t& out) { return !__builtin_add_overflow(a, b, &out); }

struct Parsed {
  TorchTensorInfos tensors;
  std::vector<std::span<const uint8_t>> storages;  // each tensor's storage bytes
};

// Checks one tensor's geometry against its storage entry (see torch_file.h).
void check_tensor(const std::string& source, const std::string& key, const TorchTensorInfo& t,
                  std::span<const uint8_t> storage) {
  const std::string tensor = "tensor " + quoted_printable(key) + ": ";
  const int64_t element = static_cast<int64_t>(dtype_size(t.dtype));
  int64_t storage_bytes = 0;
  if (!mul(t.storage_numel, element, storage_bytes) ||
      static_cast<uint64_t>(storage_bytes) != storage.size()) {
    fail(source, tensor + "its storage " + quoted_printable(t.storage_key) + " should hold " +
                     std::to_string(t.storage_numel) + " " + t.storage_type + " elements (" +
                     std::to_string(t.storage_numel) + " x " + std::to_string(element) +
                     " bytes) but its entry has " + std::to_string(storage.size()) + " bytes");
  }
  if (t.storage_offset < 0) {
    fail(source, tensor + "negative storage offset " + std::to_string(t.storage_offset));
  }
  int64_t numel = 1;
  int64_t last = t.storage_offset;  // the element furthest into the storage
  for (size_t d = 0; d < t.shape.size(); ++d) {
    if (t.shape[d] < 0 || t.strides[d] < 0) {
      fail(source, tensor + "negative size or stride (sizes " + shape_str(t.shape) + ", strides " +
                       shape_str(t.strides) + ")");
    }
    int64_t reach = 0;
    if (!mul(numel, t.shape[d], numel) ||
        (t.shape[d] > 0 &&
         (!mul(t.shape[d] - 1, t.strides[d], reach) || !add(last, reach, last)))) {
      fail(source, tensor + "sizes " + shape_str(t.shape) + " with strides " +
                       shape_str(t.strides) + " overflow 64 bits");
    }
  }
  const bool fits = numel == 0 ? t.storage_offset <= t.storage_numel : last < t.storage_numel;
  if (!fits) {
    fail(source, tensor + "sizes " + shape_str(t.shape) + ", strides " + shape_str(t.strides) +
                     " and offset " + std::to_string(t.storage_offset) +
                     " reach past the end of its storage " + quoted_printable(t.storage_key) +
                     " of " + std::to_string(t.storage_numel) + " elements");
  }
}

Parsed parse(const std::vector<uint8_t>& bytes, const std::string& source) {
  if (bytes.empty()) fail(source, "the file is empty");
  if (bytes.size() >= sizeof kLegacyMagic &&
      std::equal(std::begin(kLegacyMagic), std::end(kLegacyMagic), bytes.begin())) {
    fail(source,
         "this is a legacy torch.save file (PyTorch before 1.6, or "
         "_use_new_zipfile_serialization=False), which b3 does not read; convert it in PyTorch "
         "with torch.save(torch.load(path), new_path), which writes the zip format");
  }
  if (bytes[0] == 0x80) {
    fail(source,
         "this is a bare pickle, not a torch.save zip archive (b3 reads the zip format "
         "that torch.save writes since PyTorch 1.6)");
  }
  ZipArchive archive;
  try {
    archive = read_zip_archive(bytes);
  } catch (const ZipError& e) {
    fail(source, e.what());
  }
  if (archive.entries.empty()) fail(source, "not a torch file: the zip archive is empty");
  const std::string& first = archive.entries.front().name;
  const size_t slash = first.find('/');
  if (slash == std::string::npos || slash == 0) {
    fail(source, "not a torch file: its first entry " + quoted_printable(first) +
                     " is not inside a folder (torch.save puts everything under <archive>/)");
  }
  const std::string prefix = first.substr(0, slash + 1);
  const ZipEntry* pickle = archive.find(prefix + "data.pkl");
  if (pickle == nullptr) {
    fail(source,
         "not a torch file: the zip archive has no " + quoted_printable(prefix + "data.pkl"));
  }
  if (const ZipEntry* order = archive.find(prefix + "byteorder")) {
    const std::string_view text(reinterpret_cast<const char*>(order->data.data()),
                                order->data.size());
    if (text != "little") {
      fail(source,
           "its byteorder entry says " + quoted_printable(text) + "; b3 reads little-endian files");
    }
  }

  Parsed parsed;
  try {
    parsed.tensors = unpickle_torch_state_dict(pickle->data);
  } catch (const PickleError& e) {
    fail(source, e.what());
  }
  parsed.storages.reserve(parsed.tensors.size());
  for (const auto& [key, info] : parsed.tensors) {
    const ZipEntry* storage = archive.find(prefix + "data/" + info.storage_key);
    if (storage == nullptr) {
      fail(source, "tensor " + quoted_printable(key) + ": its storage " +
                       quoted_printable(info.storage_key) + " has no entry " +
                       quoted_printable(prefix + "data/" + info.storage_key));
    }
    check_tensor(source, key, info, storage->data);
    parsed.storages.push_back(storage->data);
  }
  return parsed;
}

// A dense row-major copy of the checked view `t` of `storage`.
Tensor copy_out(const TorchTensorInfo& t, std::span<const uint8_t> storage) {
  Tensor out = empty(t.shape, t.dtype);
  const int64_t n = out.numel();
  if (n == 0) return out;
  const size_t element = dtype_size(t.dtype);
  auto* dst = static_cast<uint8_t*>(out.data_ptr());
  const uint8_t* src = storage.data();
  if (t.strides == dense_strides(t.shape, MemoryFormat::contiguous)) {
    std::memcpy(dst, src + static_cast<size_t>(t.storage_offset) * element,
                static_cast<size_t>(n) * element);
    return out;
  }
  // Walk the logical indices in row-major order; `at` is the element's
  // storage index, updated as the index counter carries.
  const size_t dims = t.shape.size();
  std::vector<int64_t> index(dims, 0);
  int64_t at = t.storage_offset;
  for (int64_t k = 0; k < n; ++k) {
    std::memcpy(dst + static_cast<size_t>(k) * element, src + static_cast<size_t>(at) * element,
                element);
    for (size_t d = dims; d-- > 0;) {
      if (++index[d] < t.shape[d]) {
        at += t.strides[d];
        break;
      }
      at -= (t.shape[d] - 1) * t.strides[d];
      index[d] = 0;
    }
  }
  return out;
}

}  // namespace

TorchTensorInfos list_torch_state_dict(const std::vector<uint8_t>& bytes,
                                       const std::string& source) {
  return parse(bytes, source).tensors;
}

NamedTensors decode_torch_state_dict(const std::vector<uint8_t>& bytes, const std::string& source) {
  const Parsed parsed = parse(bytes, source);
  NamedTensors out;
  out.reserve(parsed.tensors.size());
  for (size_t i = 0; i < parsed.tensors.size(); ++i) {
    const auto& [key, info] = parsed.tensors[i];
    out.emplace_back(key, copy_out(info, parsed.storages[i]));
  }
  return out;
}

NamedTensors load_torch_state_dict(const std::string& path) {
  return decode_torch_state_dict(read_file_bytes(path, "torch file"), path);
}

std::string format_torch_tensor_list(const TorchTensorInfos& tensors) {
  std::string out;
  for (const auto& [key, info] : tensors) {
    out += printable_text(key) + " " + dtype_name(info.dtype) + " " + shape_str(info.shape) + "\n";
  }
  return out;
}

}  // namespace b3
