// Text that came from a file, made safe to print in an error message: valid
// UTF-8 without control characters is kept as it is (newline and tab too);
// every other byte (control characters, DEL, C1 controls, bytes of invalid or
// overlong UTF-8) becomes \xNN. The readers of outside files pass what they
// quote through it, so a hostile file cannot put raw binary on a terminal or
// in a log (DESIGN.md).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace b3 {

std::string printable_text(std::string_view text);

// Strict UTF-8: no overlong forms, surrogates or code points past U+10FFFF
// (control characters are valid UTF-8; printable_text escapes them).
bool is_valid_utf8(std::string_view text);

// printable_text of the first `max_bytes` bytes, in single quotes, with
// "[...]" before the closing quote when the text was longer: a name or value
// from a file quoted in a message that stays short whatever the file holds.
std::string quoted_printable(std::string_view text, size_t max_bytes = 200);

}  // namespace b3
