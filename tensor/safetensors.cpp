// The safetensors codec (see safetensors.h): JSON header with nlohmann::json,
// raw little-endian data, validation with messages that name the file and the
// tensor, and atomic saves through a temporary file and rename(2).
#include "tensor/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <stdexcept>

#include "tensor/file_bytes.h"
#include "tensor/json_integer.h"
#include "tensor/printable_text.h"

namespace b3 {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian data; b3 copies bytes as they are");

namespace {

using Json = nlohmann::ordered_json;  // keeps the header's order

// A header larger than this is not a tensor file (the reference
// implementation refuses headers over 100 MB too).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

// What a message quotes from the file is passed through printable_text and
// cut at kMaxQuotedBytes, so a hostile header can neither put raw bytes on
// the terminal nor make the message as long as itself.
constexpr size_t kMaxQuotedBytes = 400;

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  const std::string shown =
      what.size() > kMaxQuotedBytes ? what.substr(0, kMaxQuotedBytes) + " [...]" : what;
  throw std::runtime_error("safetensors: " + source + ": " + printable_text(shown));
}

[[noreturn]] void fail_tensor(const std::string& source, const std::string& name,
                              const std::string& what) {
  fail(source, "tensor '" + name + "': " + what);
}

std::string errno_text() { return std::strerror(errno); }

// Reads a non-negative integer that fits int64 from a JSON value, or fails.
int64_t json_count(const Json& value, const std::string& source, const std::string& name,
                   const char* field) {
  const std::optional<int64_t> v = exact_json_integer<int64_t>(value);
  if (!v || *v < 0) {
    const bool large_integer = value.is_number_unsigned();
    fail_tensor(source, name,
                large_integer
                    ? std::string(field) + " value " + value.dump() + " is too large"
                    : std::string(field) + " must hold non-negative integers, got " + value.dump());
  }
  return *v;
}

void check_name(const std::string& name, std::set<std::string>& seen) {
  if (name.empty()) throw std::invalid_argument("safetensors: a tensor name is empty");
  if (name == "__metadata__") {
    throw std::invalid_argument("safetensors: \"__metadata__\" is reserved, not a tensor name");
  }
  if (!seen.insert(name).second) {
    throw std::invalid_argument("safetensors: tensor name '" + name + "' appears twice");
  }
}

}  // namespace

const char* safetensors_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f64: return "F64";
    case DType::f32: return "F32";
    case DType::f16: return "F16";
    case DType::i64: return "I64";
    case DType::i32: return "I32";
    case DType::u8: return "U8";
  }
  throw std::logic_error("safetensors_dtype_name: unknown dtype");
}

DType parse_safetensors_dtype(const std::string& name) {
  for (DType d : {DType::f64, DType::f32, DType::f16, DType::i64, DType::i32, DType::u8}) {
    if (name == safetensors_dtype_name(d)) return d;
  }
  throw std::invalid_argument("dtype \"" + name +
                              "\" is not supported (b3 reads F64, F32, F16, I64, I32, U8)");
}

bool SafetensorsFile::contains(const std::string& name) const {
  return std::any_of(tensors.begin(), tensors.end(),
                     [&](const auto& entry) { return entry.first == name; });
}

const Tensor& SafetensorsFile::at(const std::string& name) const {
  for (const auto& [key, tensor] : tensors)
    if (key == name) return tensor;
  throw std::invalid_argument("safetensors: " + source + ": no tensor named '" + name + "'");
}

std::vector<uint8_t> encode_safetensors(const NamedTensors& tensors,
                                        const SafetensorsMetadata& metadata) {
  // Dense row-major CPU copies (a no-op for tensors that already are).
  std::vector<Tensor> dense;
  dense.reserve(tensors.size());
  std::set<std::string> seen;
  Json header = Json::object();
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header["__metadata__"] = meta;
  }
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    check_name(name, seen);
    if (!tensor.defined()) {
      throw std::invalid_argument("safetensors: tensor '" + name + "' is undefined");
    }
    Tensor t = tensor.detach();
    if (!t.device().is_cpu()) t = t.to(Device::cpu());
    t = t.contiguous();
    Json entry = Json::object();
    entry["dtype"] = safetensors_dtype_name(t.dtype());
    entry["shape"] = t.shape();
    entry["data_offsets"] = {offset, offset + t.nbytes()};
    header[name] = entry;
    offset += t.nbytes();
    dense.push_back(t);
  }
  std::string text = header.dump();
  // Pad with spaces so the data starts 8-byte aligned, as the reference writer does.
  text.append((8 - text.size() % 8) % 8, ' ');

  std::vector<uint8_t> bytes(8 + text.size() + offset);
  const uint64_t header_size = text.size();
  std::memcpy(bytes.data(), &header_size, 8);
  std::memcpy(bytes.data() + 8, text.data(), text.size());
  uint8_t* data = bytes.data() + 8 + text.size();
  for (const Tensor& t : dense) {
    if (t.nbytes() > 0) std::memcpy(data, t.data_ptr(), t.nbytes());
    data += t.nbytes();
  }
  return bytes;
}

namespace {

// The JSON header after the 8-byte length, bounded by the file and kMaxHeaderBytes.
Json parse_header(const std::vector<uint8_t>& bytes, const std::string& source,
                  uint64_t& header_size) {
  if (bytes.size() < 8) {
    fail(source, "file is " + std::to_string(bytes.size()) +
                     " bytes, too short for the 8-byte header length (not a safetensors file?)");
  }
  std::memcpy(&header_size, bytes.data(), 8);
  if (header_size > kMaxHeaderBytes || header_size > bytes.size() - 8) {
    fail(source, "header length " + std::to_string(header_size) + " does not fit in the file of " +
                     std::to_string(bytes.size()) +
                     " bytes (not a safetensors file, or truncated)");
  }
  const char* header_begin = reinterpret_cast<const char*>(bytes.data() + 8);
  Json header;
  try {
    header = Json::parse(header_begin, header_begin + header_size);
  } catch (const Json::parse_error& e) {
    fail(source, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail(source, "header is not a JSON object");
  return header;
}

// The shape of a header entry, each size bounded, the element count checked
// for overflow.
Shape parse_shape(const Json& shape_json, const std::string& source, const std::string& name,
                  int64_t& numel) {
  if (!shape_json.is_array()) fail_tensor(source, name, "shape is not an array");
  Shape shape;
  numel = 1;
  for (const Json& d : shape_json) {
    const int64_t size = json_count(d, source, name, "shape");
    if (size != 0 && numel > std::numeric_limits<int64_t>::max() / size) {
      fail_tensor(source, name, "shape " + shape_json.dump() + " is too large");
    }
    numel *= size;
    shape.push_back(size);
  }
  return shape;
}

// One tensor entry of the header, read from the data section of data_size
// bytes; `range` gets its [begin, end) there.
Tensor decode_entry(const std::string& name, const Json& entry, const uint8_t* data,
                    uint64_t data_size, const std::string& source,
                    std::pair<uint64_t, uint64_t>& range) {
  if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
      !entry.contains("data_offsets")) {
    fail_tensor(source, name, "entry needs dtype, shape and data_offsets, got " + entry.dump());
  }
  if (!entry["dtype"].is_string()) fail_tensor(source, name, "dtype is not a string");
  DType dtype;
  try {
    dtype = parse_safetensors_dtype(entry["dtype"].get<std::string>());
  } catch (const std::invalid_argument& e) {
    fail_tensor(source, name, e.what());
  }
  int64_t numel = 0;
  const Shape shape = parse_shape(entry["shape"], source, name, numel);
  const Json& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2) {
    fail_tensor(source, name, "data_offsets must be [begin, end], got " + offsets.dump());
  }
  const uint64_t begin =
      static_cast<uint64_t>(json_count(offsets[0], source, name, "data_offsets"));
  const uint64_t end = static_cast<uint64_t>(json_count(offsets[1], source, name, "data_offsets"));
  if (begin > end || end > data_size) {
    fail_tensor(source, name,
                "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                    "] out of range: the data section has " + std::to_string(data_size) + " bytes");
  }
  const uint64_t expected = static_cast<uint64_t>(numel) * dtype_size(dtype);
  if (end - begin != expected) {
    fail_tensor(source, name,
                "holds " + std::to_string(end - begin) + " bytes, but " +
                    entry["dtype"].get<std::string>() + " " + shape_str(shape) + " needs " +
                    std::to_string(expected));
  }
  Tensor t = empty(shape, TensorOptions(dtype));
  if (expected > 0) std::memcpy(t.data_ptr(), data + begin, expected);
  range = {begin, end};
  return t;
}

// The tensors must tile the data section exactly: no overlaps, no holes, no
// trailing bytes (the reference reader refuses those files too). ranges[i]
// belongs to file.tensors[i].
void check_tiling(const SafetensorsFile& file,
                  const std::vector<std::pair<uint64_t, uint64_t>>& ranges, uint64_t data_size) {
  std::vector<std::pair<uint64_t, uint64_t>> sorted = ranges;
  std::sort(sorted.begin(), sorted.end());
  uint64_t cursor = 0;
  for (size_t i = 0; i < sorted.size(); ++i) {
    if (sorted[i].first != cursor) {
      // Name the tensor that starts at the offending offset.
      const auto it = std::find(ranges.begin(), ranges.end(), sorted[i]);
      const std::string& name = file.tensors[static_cast<size_t>(it - ranges.begin())].first;
      fail_tensor(file.source, name,
                  "data starts at byte " + std::to_string(sorted[i].first) + ", expected " +
                      std::to_string(cursor) +
                      (sorted[i].first < cursor ? " (overlaps another tensor)" : " (a hole)"));
    }
    cursor = sorted[i].second;
  }
  if (cursor != data_size) {
    fail(file.source, "the tensors cover " + std::to_string(cursor) + " of the " +
                          std::to_string(data_size) + " data bytes (truncated or trailing data)");
  }
}

}  // namespace

SafetensorsFile decode_safetensors(const std::vector<uint8_t>& bytes, const std::string& source) {
  uint64_t header_size = 0;
  const Json header = parse_header(bytes, source, header_size);
  SafetensorsFile file;
  file.source = source;
  const uint8_t* data = bytes.data() + 8 + header_size;
  const uint64_t data_size = bytes.size() - 8 - header_size;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // to check for overlaps and holes
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(source, "__metadata__ is not a JSON object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) fail(source, "__metadata__ value of '" + key + "' is not a string");
        file.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    std::pair<uint64_t, uint64_t> range;
    file.tensors.emplace_back(name, decode_entry(name, entry, data, data_size, source, range));
    ranges.push_back(range);
  }
  check_tiling(file, ranges, data_size);
  return file;
}

namespace {
constexpr const char* kTemporaryMark = ".tmp.";  // <file>.tmp.<pid>.<n>
}  // namespace

std::optional<SaveTemporary> parse_save_temporary(const std::string& file_name) {
  const std::string mark = kTemporaryMark;
  const std::string::size_type at = file_name.rfind(mark);
  if (at == std::string::npos || at == 0) return std::nullopt;
  const std::string rest = file_name.substr(at + mark.size());  // "<pid>.<n>"
  const std::string::size_type dot = rest.find('.');
  const auto digits = [](const std::string& text) {
    return !text.empty() && text.size() <= 9 &&
           std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  if (dot == std::string::npos || !digits(rest.substr(0, dot)) || !digits(rest.substr(dot + 1)))
    return std::nullopt;
  return SaveTemporary{file_name.substr(0, at), std::stoll(rest.substr(0, dot))};
}

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const SafetensorsMetadata& metadata) {
  const std::vector<uint8_t> bytes = encode_safetensors(tensors, metadata);

  // A unique temporary name in the target's folder (rename is atomic only
  // within one file system).
  std::random_device entropy;
  const std::string tmp = path + kTemporaryMark + std::to_string(::getpid()) + "." +
                          std::to_string(entropy() & 0xffffffu);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, "cannot create temporary file " + tmp + ": " + errno_text());
  auto abandon = [&](const std::string& what) {
    const std::string reason = errno_text();
    ::close(fd);
    ::unlink(tmp.c_str());
    fail(path, what + ": " + reason + " (nothing was written to " + path + ")");
  };
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) abandon("cannot write " + std::to_string(bytes.size()) + " bytes to " + tmp);
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) abandon("cannot flush " + tmp);
  if (::close(fd) != 0) {
    const std::string reason = errno_text();
    ::unlink(tmp.c_str());
    fail(path, "cannot close " + tmp + ": " + reason);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string reason = errno_text();
    ::unlink(tmp.c_str());
    fail(path, "cannot rename " + tmp + " to it: " + reason);
  }
}

SafetensorsFile load_safetensors(const std::string& path) {
  return decode_safetensors(read_file_bytes(path, "safetensors"), path);
}

}  // namespace b3
