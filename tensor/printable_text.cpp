// printable_text (tensor/printable_text.h): a UTF-8 decoder that copies what
// decodes to a printable code point and escapes every other byte; the same
// decoder checks UTF-8 (is_valid_utf8).
#include "tensor/printable_text.h"

#include <cstdint>
#include <cstdio>

namespace b3 {

namespace {

// The length of the valid UTF-8 sequence at text[at] (no overlong forms,
// surrogates or code points past U+10FFFF), or 0; its code point in *code.
size_t utf8_sequence(std::string_view text, size_t at, uint32_t* code) {
  const auto lead = static_cast<uint8_t>(text[at]);
  if (lead < 0x80) {
    *code = lead;
    return 1;
  }
  const size_t length = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc2 ? 2 : 0;
  if (length == 0 || lead > 0xf4 || at + length > text.size()) return 0;
  *code = lead & (0x7fu >> length);
  for (size_t k = 1; k < length; ++k) {
    const auto next = static_cast<uint8_t>(text[at + k]);
    if ((next & 0xc0) != 0x80) return 0;
    *code = (*code << 6) | (next & 0x3fu);
  }
  constexpr uint32_t kSmallest[] = {0, 0, 0x80, 0x800, 0x10000};  // shorter would be overlong
  const bool valid =
      *code >= kSmallest[length] && *code <= 0x10ffff && !(*code >= 0xd800 && *code <= 0xdfff);
  return valid ? length : 0;
}

// The length of the printable UTF-8 sequence at text[at], or 0: valid, and
// not a control character (C0 but newline and tab, DEL, C1).
size_t printable_sequence(std::string_view text, size_t at) {
  uint32_t code = 0;
  const size_t length = utf8_sequence(text, at, &code);
  if (length == 0) return 0;
  const bool control =
      (code < 0x20 && code != '\n' && code != '\t') || (code >= 0x7f && code < 0xa0);
  return control ? 0 : length;
}

}  // namespace

std::string printable_text(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t at = 0; at < text.size();) {
    const size_t length = printable_sequence(text, at);
    if (length > 0) {
      out.append(text.substr(at, length));
      at += length;
    } else {
      char escaped[5];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", static_cast<uint8_t>(text[at]));
      out += escaped;
      ++at;
    }
  }
  return out;
}

bool is_valid_utf8(std::string_view text) {
  uint32_t code = 0;
  for (size_t at = 0; at < text.size();) {
    const size_t length = utf8_sequence(text, at, &code);
    if (length == 0) return false;
    at += length;
  }
  return true;
}

std::string quoted_printable(std::string_view text, size_t max_bytes) {
  const std::string_view end = text.size() > max_bytes ? "[...]'" : "'";
  std::string out = printable_text(text.substr(0, max_bytes));
  out.insert(out.begin(), '\'');
  out.append(end);
  return out;
}

}  // namespace b3
