// Text that came from a file, made safe to print in an error message: valid
// UTF-8 without control characters is kept as it is (newline and tab too);
// every other byte (control characters, DEL, C1 controls, bytes of invalid or
// overlong UTF-8) becomes \xNN. The readers of outside files pass what they
// quote through it, so a hostile file cannot put raw binary on a terminal or
// in a log (DESIGN.md).
#pragma once

#include <string>
#include <string_view>

namespace b3 {

std::string printable_text(std::string_view text);

}  // namespace b3
