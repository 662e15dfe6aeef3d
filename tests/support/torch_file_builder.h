// torch.save files built byte by byte as PyTorch 1.13 lays them out (a zip
// of stored entries under one folder: data.pkl, data/<key>, version, with
// ZIP64 records and 64-byte aligned data), for the torch file tests and the
// fuzz target's seeds, which must not need Python: ZipBuilder writes the
// archive, Pickle the protocol-2 opcodes of a state dict, and sample_file()
// a small state dict of views, a shared storage and every dtype b3 reads.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "tensor/dtype.h"
#include "tensor/tensor.h"
#include "tensor/zip_archive.h"

namespace b3::test {

using Bytes = std::vector<uint8_t>;

inline void put16(Bytes& b, uint16_t v) {
  b.push_back(static_cast<uint8_t>(v));
  b.push_back(static_cast<uint8_t>(v >> 8));
}
inline void put32(Bytes& b, uint32_t v) {
  put16(b, static_cast<uint16_t>(v));
  put16(b, static_cast<uint16_t>(v >> 16));
}
inline void put64(Bytes& b, uint64_t v) {
  put32(b, static_cast<uint32_t>(v));
  put32(b, static_cast<uint32_t>(v >> 32));
}
inline void append(Bytes& b, const std::string& s) { b.insert(b.end(), s.begin(), s.end()); }
inline void append(Bytes& b, const Bytes& s) { b.insert(b.end(), s.begin(), s.end()); }

template <typename T>
inline Bytes raw(const std::vector<T>& values) {
  Bytes out(values.size() * sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// A zip archive written record by record, so a test can also write what no
// honest writer would (the central records are editable before finish()).
class ZipBuilder {
 public:
  struct Record {
    std::string name;
    uint16_t method = 0;
    uint16_t flags = 0;
    uint32_t crc = 0;
    uint64_t size = 0;
    uint64_t offset = 0;
    bool zip64_extra = false;  // sizes and offset in a ZIP64 extra field (0xFFFFFFFF here)
  };

  // A local header (CRC and sizes filled in, no data descriptor) and the data.
  Record& add(const std::string& name, const Bytes& data, uint16_t method = 0, uint16_t flags = 0) {
    Record r{name, method, flags, crc32(data), data.size(), bytes.size()};
    put32(bytes, 0x04034b50);
    put16(bytes, 20);
    put16(bytes, flags);
    put16(bytes, method);
    put32(bytes, 0);  // time, date
    put32(bytes, r.crc);
    put32(bytes, static_cast<uint32_t>(data.size()));
    put32(bytes, static_cast<uint32_t>(data.size()));
    put16(bytes, static_cast<uint16_t>(name.size()));
    put16(bytes, 0);
    append(bytes, name);
    append(bytes, data);
    records.push_back(r);
    return records.back();
  }

  // The central directory and end records (ZIP64 ones too, as PyTorch writes).
  Bytes finish(bool zip64 = true) const {
    Bytes out = bytes;
    const uint64_t directory = out.size();
    for (const Record& r : records) {
      put32(out, 0x02014b50);
      put16(out, 20);
      put16(out, 20);
      put16(out, r.flags);
      put16(out, r.method);
      put32(out, 0);
      put32(out, r.crc);
      const uint32_t marker = 0xffffffffu;
      put32(out, r.zip64_extra ? marker : static_cast<uint32_t>(r.size));
      put32(out, r.zip64_extra ? marker : static_cast<uint32_t>(r.size));
      put16(out, static_cast<uint16_t>(r.name.size()));
      put16(out, r.zip64_extra ? 28 : 0);  // extra
      put16(out, 0);                       // comment
      put16(out, 0);                       // disk
      put16(out, 0);                       // internal attributes
      put32(out, 0);                       // external attributes
      put32(out, r.zip64_extra ? marker : static_cast<uint32_t>(r.offset));
      append(out, r.name);
      if (r.zip64_extra) {
        put16(out, 0x0001);
        put16(out, 24);
        put64(out, r.size);
        put64(out, r.size);
        put64(out, r.offset);
      }
    }
    const uint64_t directory_size = out.size() - directory;
    if (zip64) {
      const uint64_t record = out.size();
      put32(out, 0x06064b50);
      put64(out, 44);
      put16(out, 45);
      put16(out, 45);
      put32(out, 0);
      put32(out, 0);
      put64(out, records.size());
      put64(out, records.size());
      put64(out, directory_size);
      put64(out, directory);
      put32(out, 0x07064b50);
      put32(out, 0);
      put64(out, record);
      put32(out, 1);
    }
    put32(out, 0x06054b50);
    put16(out, 0);
    put16(out, 0);
    put16(out, static_cast<uint16_t>(records.size()));
    put16(out, static_cast<uint16_t>(records.size()));
    put32(out, static_cast<uint32_t>(directory_size));
    put32(out, static_cast<uint32_t>(directory));
    put16(out, 0);
    return out;
  }

  Bytes bytes;
  std::vector<Record> records;
};

// Pickle opcodes, written as pickle.py's protocol 2 writer would.
class Pickle {
 public:
  Pickle& op(uint8_t code) {
    bytes.push_back(code);
    return *this;
  }
  Pickle& str(const std::string& s) {
    op('X');
    put32(bytes, static_cast<uint32_t>(s.size()));
    append(bytes, s);
    return *this;
  }
  Pickle& global(const std::string& module, const std::string& name) {
    op('c');
    append(bytes, module + "\n" + name + "\n");
    return *this;
  }
  Pickle& integer(int64_t v) {
    if (v >= 0 && v < 256) return op('K').op(static_cast<uint8_t>(v));
    if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');
      put32(bytes, static_cast<uint32_t>(v));
      return *this;
    }
    op(0x8a).op(8);
    put64(bytes, static_cast<uint64_t>(v));
    return *this;
  }
  Pickle& ints(const Shape& values) {
    op('(');
    for (const int64_t v : values) integer(v);
    return op('t');
  }
  Pickle& put(uint8_t memo) { return op('q').op(memo); }
  Pickle& get(uint8_t memo) { return op('h').op(memo); }
  Bytes bytes;
};

struct FakeTensor {
  std::string key;
  std::string storage_key;
  int64_t numel;  // of the storage
  int64_t offset;
  Shape shape, strides;
  std::string storage_type = "FloatStorage";
};

// One tensor's _rebuild_tensor_v2(...) REDUCE, as torch.save writes it.
// Memo 0 is collections.OrderedDict, memo 1 _rebuild_tensor_v2.
inline void tensor_ops(Pickle& p, const FakeTensor& t, bool first) {
  p.str(t.key);
  if (first) {
    p.global("torch._utils", "_rebuild_tensor_v2").put(1);
  } else {
    p.get(1);
  }
  p.op('(').op('(').str("storage").global("torch", t.storage_type).str(t.storage_key).str("cpu");
  p.integer(t.numel).op('t').op('Q');
  p.integer(t.offset).ints(t.shape).ints(t.strides).op(0x89);  // requires_grad False
  p.get(0).op(')').op('R');                                    // backward hooks: OrderedDict()
  p.op('t').op('R');
}

// The pickle of an OrderedDict of `tensors` with torch's _metadata BUILD.
inline Bytes state_dict_pickle(const std::vector<FakeTensor>& tensors) {
  Pickle p;
  p.op(0x80).op(2).global("collections", "OrderedDict").put(0).op(')').op('R').op('(');
  for (size_t i = 0; i < tensors.size(); ++i) tensor_ops(p, tensors[i], i == 0);
  p.op('u');
  p.op('}').str("_metadata").get(0).op(')').op('R');
  p.str("").op('}').str("version").integer(1).op('s').op('s').op('s');
  p.op('b').op('.');
  return p.bytes;
}

struct StorageEntry {
  std::string key;
  Bytes data;
};

inline Bytes torch_zip(const Bytes& pickle, const std::vector<StorageEntry>& storages,
                       bool zip64 = true) {
  ZipBuilder zip;
  zip.add("archive/data.pkl", pickle);
  for (const StorageEntry& s : storages) zip.add("archive/data/" + s.key, s.data);
  zip.add("archive/version", Bytes{'3', '\n'});
  return zip.finish(zip64);
}

// A small state dict exercising views, shared storage and every dtype.
inline const std::vector<float> kFloats = {0.5f, -1.0f, 2.25f, 3.0f, -4.5f, 5.0f, 6.0f, 7.5f};
inline const std::vector<int64_t> kLongs = {7, -3, int64_t{1} << 40};

inline std::vector<FakeTensor> sample_tensors() {
  return {
      {"w", "0", 8, 0, {2, 3}, {3, 1}},                // dense 2x3 of the first six
      {"w.t", "0", 8, 0, {3, 2}, {1, 3}},              // its transpose, same storage
      {"tail", "0", 8, 5, {3}, {1}},                   // offset 5
      {"col", "0", 8, 1, {2, 2}, {4, 2}},              // strided with offset
      {"bcast", "0", 8, 2, {2, 3}, {0, 1}},            // stride 0
      {"count", "1", 3, 2, {}, {}, "LongStorage"},     // a 0-d i64 (num_batches_tracked)
      {"longs", "1", 3, 0, {3}, {1}, "LongStorage"},   // all of storage 1
      {"none", "0", 8, 8, {0, 4}, {4, 1}},             // empty, offset at the end
      {"d", "2", 2, 0, {2}, {1}, "DoubleStorage"},     // f64
      {"h", "3", 2, 0, {2}, {1}, "HalfStorage"},       // f16
      {"i", "4", 2, 0, {1, 2}, {2, 1}, "IntStorage"},  // i32
      {"b", "5", 3, 0, {3}, {1}, "ByteStorage"},       // u8
  };
}

inline std::vector<StorageEntry> sample_storages() {
  return {{"0", raw(kFloats)},
          {"1", raw(kLongs)},
          {"2", raw(std::vector<double>{1e-300, -2.5})},
          {"3", raw(std::vector<uint16_t>{0x3c00, 0xc000})},  // 1.0, -2.0 in binary16
          {"4", raw(std::vector<int32_t>{INT32_MIN, 12})},
          {"5", Bytes{0, 128, 255}}};
}

inline Bytes sample_file(bool zip64 = true) {
  return torch_zip(state_dict_pickle(sample_tensors()), sample_storages(), zip64);
}

}  // namespace b3::test
