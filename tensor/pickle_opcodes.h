// The names of Python pickle's opcodes (protocols 0 to 5, as Python's
// pickletools lists them), for messages that say which op of a file was
// refused; "unknown" for a byte that is no opcode.
#pragma once

#include <cstdint>

namespace b3 {

const char* pickle_opcode_name(uint8_t op);

}  // namespace b3
