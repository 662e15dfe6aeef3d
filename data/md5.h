// MD5 (RFC 1321), only to verify downloaded archives against their published
// checksums. Not for security: MD5 is broken for that.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace b3 {

class Md5 {
 public:
  Md5();
  void update(const void* data, size_t nbytes);
  // The digest as 32 lowercase hex digits; the object is finished afterwards.
  std::string hex_digest();

 private:
  void transform(const uint8_t block[64]);
  uint32_t state_[4];
  uint64_t total_bytes_ = 0;
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  bool finished_ = false;
};

std::string md5_hex(const std::string& bytes);
// The MD5 of a file, read in chunks; throws naming the file if it cannot be read.
std::string md5_file(const std::string& path);

}  // namespace b3
