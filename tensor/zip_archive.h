// A reader for a zip archive held in memory, as much of the format as files
// written by torch.save (PyTorch >= 1.6, through miniz) need, and checked as
// strictly as a file from outside deserves.
//
//   local file header   "PK\3\4", ..., name length, extra length, name, extra
//                       (PyTorch pads the extra field so the data starts on a
//                       64-byte boundary), then the entry's data, then (flag
//                       bit 3) a data descriptor; with bit 3 set the header's
//                       CRC and sizes are zero and only the central directory
//                       has them
//   central directory   one "PK\1\2" record per entry: method, flags, CRC-32,
//                       sizes, local header offset, name (ZIP64 extra field
//                       0x0001 holds the sizes and offset that do not fit 32 bits)
//   ZIP64 EOCD record   "PK\6\6" and its locator "PK\6\7", which PyTorch always
//                       writes: 64-bit entry count, directory size and offset
//   EOCD record         "PK\5\6" at the end, followed only by its comment
//
// Only STORED (method 0) entries are read, as PyTorch writes them: their data
// is a span of the caller's buffer, no copy. Everything is bounded before use
// and refused with a ZipError saying what is wrong: no EOCD, multi-disk
// archives, a directory outside the file or not ending where the EOCD
// records begin, more entries than fit, empty, over-long or duplicated names,
// compressed or encrypted entries, a local header that disagrees with the
// directory, data outside the file or overlapping another entry, a CRC-32
// that does not match. Names are kept as bytes; messages quote them through
// printable_text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace b3 {

// Thrown for every malformed or unsupported archive; the message says why
// (without a prefix naming the file: the caller adds one).
class ZipError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ZipEntry {
  std::string name;               // as stored (bytes, not checked as UTF-8)
  std::span<const uint8_t> data;  // the stored bytes, inside the archive's buffer
  uint32_t crc32 = 0;             // checked against the data when the archive is read
};

struct ZipArchive {
  std::vector<ZipEntry> entries;  // in central directory order

  // The entry called `name`, or null.
  const ZipEntry* find(std::string_view name) const;
};

// Limits on what an archive may declare (a torch.save file has one entry
// per storage plus three or four).
inline constexpr uint64_t kZipMaxEntries = 1u << 20;
inline constexpr size_t kZipMaxNameBytes = 4096;

// Reads and checks the whole archive (every entry's CRC-32 included). The
// entries' spans point into `bytes`, which must outlive the result.
ZipArchive read_zip_archive(std::span<const uint8_t> bytes);

// The CRC-32 of zip (and PNG, gzip): polynomial 0xEDB88320, reflected,
// initial value and final xor 0xFFFFFFFF. crc32("123456789") == 0xCBF43926.
uint32_t crc32(std::span<const uint8_t> bytes);

}  // namespace b3
