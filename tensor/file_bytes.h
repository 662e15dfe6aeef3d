// Reading a whole file into memory with an error that names it: what the
// readers of tensor files (safetensors, torch.save) and of datasets (CIFAR-10
// binary, image folders) start from.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace b3 {

// The whole file; throws std::runtime_error "<what>: cannot read '<path>': ...".
std::vector<uint8_t> read_file_bytes(const std::string& path, const std::string& what);

}  // namespace b3
