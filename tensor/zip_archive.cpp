// The in-memory zip reader (see zip_archive.h): EOCD search from the end,
// ZIP64 records when present, a walk of the central directory with every
// offset and length checked against the buffer before it is read, then each
// entry's local header, data range and CRC-32.
#include "tensor/zip_archive.h"

#include <algorithm>
#include <array>
#include <limits>
#include <set>
#include <utility>

#include "tensor/printable_text.h"

namespace b3 {

namespace {

constexpr uint32_t kLocalHeaderSignature = 0x04034b50;
constexpr uint32_t kCentralHeaderSignature = 0x02014b50;
constexpr uint32_t kEocdSignature = 0x06054b50;
constexpr uint32_t kZip64EocdSignature = 0x06064b50;
constexpr uint32_t kZip64LocatorSignature = 0x07064b50;

constexpr size_t kLocalHeaderBytes = 30;
constexpr size_t kCentralHeaderBytes = 46;
constexpr size_t kEocdBytes = 22;
constexpr size_t kZip64LocatorBytes = 20;
constexpr size_t kZip64EocdBytes = 56;  // up to and including the directory offset
constexpr size_t kMaxCommentBytes = 0xffff;

constexpr uint16_t kFlagEncrypted = 1u << 0;
constexpr uint16_t kFlagDataDescriptor = 1u << 3;
constexpr uint16_t kFlagStrongEncryption = 1u << 6;
constexpr uint16_t kFlagMaskedDirectory = 1u << 13;

constexpr uint16_t kZip64ExtraId = 0x0001;

[[noreturn]] void fail(const std::string& what) { throw ZipError("zip: " + what); }

// Little-endian reads; the caller has checked that the bytes are there.
uint16_t u16(std::span<const uint8_t> b, size_t at) {
  return static_cast<uint16_t>(b[at] | (b[at + 1] << 8));
}
uint32_t u32(std::span<const uint8_t> b, size_t at) {
  return static_cast<uint32_t>(b[at]) | (static_cast<uint32_t>(b[at + 1]) << 8) |
         (static_cast<uint32_t>(b[at + 2]) << 16) | (static_cast<uint32_t>(b[at + 3]) << 24);
}
uint64_t u64(std::span<const uint8_t> b, size_t at) {
  return static_cast<uint64_t>(u32(b, at)) | (static_cast<uint64_t>(u32(b, at + 4)) << 32);
}

// True when [offset, offset + length) lies inside a buffer of `size` bytes
// (no overflow whatever the values).
bool fits(uint64_t offset, uint64_t length, uint64_t size) {
  return offset <= size && length <= size - offset;
}

constexpr std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t n = 0; n < 256; ++n) {
    uint32_t c = n;
    for (int k = 0; k < 8; ++k) c = (c & 1u) != 0 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    table[n] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kCrcTable = make_crc_table();

const char* method_name(uint16_t method) {
  switch (method) {
    case 8: return "DEFLATE";
    case 9: return "DEFLATE64";
    case 12: return "BZIP2";
    case 14: return "LZMA";
    case 93: return "Zstandard";
    case 95: return "XZ";
    default: return "unknown";
  }
}

// Where the central directory is, from the EOCD and (when present) the ZIP64
// records, and where those records begin (the directory must end there).
struct Directory {
  uint64_t offset = 0;
  uint64_t size = 0;
  uint64_t entries = 0;
  uint64_t end_records_begin = 0;
};

size_t find_eocd(std::span<const uint8_t> bytes) {
  if (bytes.size() < kEocdBytes) {
    fail("the file is " + std::to_string(bytes.size()) +
         " bytes, too short for a zip archive (its end record alone is 22 bytes)");
  }
  // The EOCD is followed only by its comment, which ends the file: the last
  // signature whose comment length reaches exactly the end is the record.
  const size_t last = bytes.size() - kEocdBytes;
  const size_t first = last > kMaxCommentBytes ? last - kMaxCommentBytes : 0;
  for (size_t at = last + 1; at-- > first;) {
    if (u32(bytes, at) == kEocdSignature && u16(bytes, at + 20) == last - at) return at;
  }
  fail("no end of central directory record (not a zip archive, or truncated)");
}

Directory read_directory_location(std::span<const uint8_t> bytes) {
  const size_t eocd = find_eocd(bytes);
  const uint16_t disk = u16(bytes, eocd + 4);
  const uint16_t directory_disk = u16(bytes, eocd + 6);
  const uint16_t entries_here = u16(bytes, eocd + 8);
  const uint16_t entries_total = u16(bytes, eocd + 10);
  const uint32_t size32 = u32(bytes, eocd + 12);
  const uint32_t offset32 = u32(bytes, eocd + 16);
  Directory dir{offset32, size32, entries_total, eocd};

  const bool has_locator =
      eocd >= kZip64LocatorBytes && u32(bytes, eocd - kZip64LocatorBytes) == kZip64LocatorSignature;
  if (has_locator) {
    const size_t locator = eocd - kZip64LocatorBytes;
    const uint32_t record_disk = u32(bytes, locator + 4);
    const uint64_t record = u64(bytes, locator + 8);
    const uint32_t disks = u32(bytes, locator + 16);
    if (record_disk != 0 || disks != 1) {
      fail("multi-disk archives are not supported (ZIP64 locator names disk " +
           std::to_string(record_disk) + " of " + std::to_string(disks) + ")");
    }
    // The ZIP64 record sits right before its locator (nothing in between).
    if (record > locator || locator - record < kZip64EocdBytes ||
        u32(bytes, record) != kZip64EocdSignature) {
      fail("the ZIP64 locator points to offset " + std::to_string(record) +
           ", where there is no ZIP64 end of central directory record");
    }
    const uint64_t record_size = u64(bytes, record + 4);  // counts the bytes after this field
    if (record_size < kZip64EocdBytes - 12 || record_size != locator - record - 12) {
      fail("the ZIP64 end of central directory record declares " + std::to_string(record_size) +
           " bytes but " + std::to_string(locator - record - 12) + " lie before its locator");
    }
    const uint32_t disk64 = u32(bytes, record + 16);
    const uint32_t directory_disk64 = u32(bytes, record + 20);
    const uint64_t entries_here64 = u64(bytes, record + 24);
    const uint64_t entries64 = u64(bytes, record + 32);
    const uint64_t size64 = u64(bytes, record + 40);
    const uint64_t offset64 = u64(bytes, record + 48);
    if (disk64 != 0 || directory_disk64 != 0 || entries_here64 != entries64) {
      fail("multi-disk archives are not supported (ZIP64 record)");
    }
    // A 32-bit field either holds the value or the 0xFF.. marker meaning "see ZIP64".
    if ((entries_total != 0xffff && entries_total != entries64) ||
        (size32 != 0xffffffffu && size32 != size64) ||
        (offset32 != 0xffffffffu && offset32 != offset64)) {
      fail("the end of central directory record and its ZIP64 record disagree");
    }
    dir = Directory{offset64, size64, entries64, record};
  } else if (disk != 0 || directory_disk != 0 || entries_here != entries_total) {
    fail("multi-disk archives are not supported");
  }

  if (dir.entries > kZipMaxEntries) {
    fail("the archive declares " + std::to_string(dir.entries) + " entries, more than the " +
         std::to_string(kZipMaxEntries) + " b3 reads");
  }
  if (!fits(dir.offset, dir.size, dir.end_records_begin) ||
      dir.offset + dir.size != dir.end_records_begin) {
    fail("the central directory (offset " + std::to_string(dir.offset) + ", " +
         std::to_string(dir.size) + " bytes) does not end where the end records begin (offset " +
         std::to_string(dir.end_records_begin) + "): truncated, or data around the archive");
  }
  if (dir.entries * kCentralHeaderBytes > dir.size) {
    fail("the central directory of " + std::to_string(dir.size) + " bytes cannot hold " +
         std::to_string(dir.entries) + " entries");
  }
  return dir;
}

// One central directory record's facts, ZIP64 values applied.
struct CentralRecord {
  std::string name;
  uint16_t flags = 0;
  uint16_t method = 0;
  uint32_t crc = 0;
  uint64_t compressed = 0;
  uint64_t uncompressed = 0;
  uint64_t local_offset = 0;
};

// Applies the ZIP64 extended information field (if any) found in `extra`.
void apply_zip64_extra(std::span<const uint8_t> extra, CentralRecord& r, bool disk_marker) {
  const bool need_uncompressed = r.uncompressed == 0xffffffffu;
  const bool need_compressed = r.compressed == 0xffffffffu;
  const bool need_offset = r.local_offset == 0xffffffffu;
  bool found = false;
  for (size_t at = 0; at < extra.size();) {
    if (extra.size() - at < 4)
      fail("entry " + quoted_printable(r.name) + ": extra field is truncated");
    const uint16_t id = u16(extra, at);
    const uint16_t length = u16(extra, at + 2);
    at += 4;
    if (length > extra.size() - at)
      fail("entry " + quoted_printable(r.name) + ": extra field is truncated");
    if (id == kZip64ExtraId && !found) {
      found = true;
      std::span<const uint8_t> field = extra.subspan(at, length);
      size_t used = 0;
      auto next = [&](uint64_t& value) {
        if (field.size() - used < 8) {
          fail("entry " + quoted_printable(r.name) + ": ZIP64 extra field is too short");
        }
        value = u64(field, used);
        used += 8;
      };
      if (need_uncompressed) next(r.uncompressed);
      if (need_compressed) next(r.compressed);
      if (need_offset) next(r.local_offset);
      if (disk_marker) {
        if (field.size() - used < 4 || u32(field, used) != 0) {
          fail("entry " + quoted_printable(r.name) + " is on another disk");
        }
      }
    }
    at += length;
  }
  if ((need_uncompressed || need_compressed || need_offset || disk_marker) && !found) {
    fail("entry " + quoted_printable(r.name) +
         ": a size or offset is marked ZIP64 but there is no ZIP64 " + "extra field");
  }
}

}  // namespace

uint32_t crc32(std::span<const uint8_t> bytes) {
  uint32_t c = 0xffffffffu;
  for (const uint8_t b : bytes) c = kCrcTable[(c ^ b) & 0xffu] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

const ZipEntry* ZipArchive::find(std::string_view name) const {
  for (const ZipEntry& entry : entries)
    if (entry.name == name) return &entry;
  return nullptr;
}

ZipArchive read_zip_archive(std::span<const uint8_t> bytes) {
  const Directory dir = read_directory_location(bytes);
  const std::span<const uint8_t> directory = bytes.subspan(dir.offset, dir.size);

  ZipArchive archive;
  archive.entries.reserve(dir.entries);
  std::set<std::string> names;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [local header, end of data) per entry
  size_t at = 0;
  for (uint64_t index = 0; index < dir.entries; ++index) {
    const std::string which = "central directory record " + std::to_string(index);
    if (directory.size() - at < kCentralHeaderBytes) fail(which + " is truncated");
    if (u32(directory, at) != kCentralHeaderSignature) fail(which + " has no signature");
    CentralRecord r;
    r.flags = u16(directory, at + 8);
    r.method = u16(directory, at + 10);
    r.crc = u32(directory, at + 16);
    r.compressed = u32(directory, at + 20);
    r.uncompressed = u32(directory, at + 24);
    const uint16_t name_length = u16(directory, at + 28);
    const uint16_t extra_length = u16(directory, at + 30);
    const uint16_t comment_length = u16(directory, at + 32);
    const uint16_t disk_start = u16(directory, at + 34);
    r.local_offset = u32(directory, at + 42);
    const size_t variable = size_t{name_length} + extra_length + comment_length;
    if (directory.size() - at - kCentralHeaderBytes < variable) {
      fail(which + ": name, extra field and comment run past the central directory");
    }
    if (name_length == 0) fail(which + " has an empty name");
    if (name_length > kZipMaxNameBytes) {
      fail(which + " has a name of " + std::to_string(name_length) + " bytes, more than the " +
           std::to_string(kZipMaxNameBytes) + " b3 reads");
    }
    const size_t name_at = at + kCentralHeaderBytes;
    r.name.assign(reinterpret_cast<const char*>(directory.data() + name_at), name_length);
    apply_zip64_extra(directory.subspan(name_at + name_length, extra_length), r,
                      disk_start == 0xffff);
    at = name_at + variable;

    const std::string entry = "entry " + quoted_printable(r.name);
    if (disk_start != 0 && disk_start != 0xffff) fail(entry + " is on another disk");
    if ((r.flags & (kFlagEncrypted | kFlagStrongEncryption | kFlagMaskedDirectory)) != 0) {
      fail(entry + " is encrypted");
    }
    if (r.method != 0) {
      fail(entry + " is compressed (method " + std::to_string(r.method) + ", " +
           method_name(r.method) + "); only stored (uncompressed) entries are read, as " +
           "torch.save writes them");
    }
    if (r.compressed != r.uncompressed) {
      fail(entry + " is stored but its compressed size " + std::to_string(r.compressed) +
           " differs from its size " + std::to_string(r.uncompressed));
    }
    if (!names.insert(r.name).second) fail(entry + " appears twice");

    // The local header: inside the file before the directory, same name and method.
    if (!fits(r.local_offset, kLocalHeaderBytes, dir.offset)) {
      fail(entry + ": its local header (offset " + std::to_string(r.local_offset) +
           ") lies outside the data before the central directory");
    }
    const size_t local = static_cast<size_t>(r.local_offset);
    if (u32(bytes, local) != kLocalHeaderSignature) {
      fail(entry + ": no local header at offset " + std::to_string(local));
    }
    const uint16_t local_flags = u16(bytes, local + 6);
    const uint16_t local_method = u16(bytes, local + 8);
    const uint16_t local_name_length = u16(bytes, local + 26);
    const uint16_t local_extra_length = u16(bytes, local + 28);
    const uint64_t data_offset =
        r.local_offset + kLocalHeaderBytes + local_name_length + local_extra_length;
    if (data_offset > dir.offset) {
      fail(entry + ": its local header runs into the central directory");
    }
    const std::string_view local_name(reinterpret_cast<const char*>(bytes.data() + local + 30),
                                      local_name_length);
    if (local_name != r.name) {
      fail(entry + ": the local header names it " + quoted_printable(local_name));
    }
    if (local_method != r.method || (local_flags & kFlagEncrypted) != 0) {
      fail(entry + ": the local header's method or encryption flag disagrees with the directory");
    }
    // Without a data descriptor (flag bit 3) the local header repeats the CRC
    // and sizes (a size of 0xFFFFFFFF means "in the ZIP64 extra field").
    if ((local_flags & kFlagDataDescriptor) == 0) {
      const uint32_t local_crc = u32(bytes, local + 14);
      const uint32_t local_compressed = u32(bytes, local + 18);
      const uint32_t local_size = u32(bytes, local + 22);
      const auto same = [](uint32_t local_value, uint64_t value) {
        return local_value == value || local_value == 0xffffffffu;
      };
      if (local_crc != r.crc || !same(local_compressed, r.compressed) ||
          !same(local_size, r.uncompressed)) {
        fail(entry + ": the local header's CRC or sizes disagree with the directory");
      }
    }
    if (!fits(data_offset, r.uncompressed, dir.offset)) {
      fail(entry + ": its " + std::to_string(r.uncompressed) + " bytes at offset " +
           std::to_string(data_offset) + " run past the data before the central directory");
    }
    ranges.emplace_back(r.local_offset, data_offset + r.uncompressed);

    ZipEntry out;
    out.data = bytes.subspan(static_cast<size_t>(data_offset), static_cast<size_t>(r.uncompressed));
    out.crc32 = r.crc;
    const uint32_t actual = crc32(out.data);
    if (actual != r.crc) {
      fail(entry + ": CRC-32 mismatch (the directory says " + std::to_string(r.crc) +
           ", the data has " + std::to_string(actual) + "): the file is corrupt");
    }
    out.name = std::move(r.name);
    archive.entries.push_back(std::move(out));
  }
  if (at != directory.size()) {
    fail("the central directory has " + std::to_string(directory.size() - at) +
         " bytes after its last record");
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t k = 1; k < ranges.size(); ++k) {
    if (ranges[k].first < ranges[k - 1].second) {
      fail("two entries overlap (at offsets " + std::to_string(ranges[k - 1].first) + " and " +
           std::to_string(ranges[k].first) + ")");
    }
  }
  return archive;
}

}  // namespace b3
