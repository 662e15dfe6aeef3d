// What the torch file fuzz targets check (check_torch_file): a refusal's
// message carries no raw bytes; of an accepted .pth, the tensors that
// decode_torch_state_dict returns are dense CPU tensors whose every byte is
// readable (ASan checks the reads), and list_torch_state_dict, which makes
// the same checks without copying, lists the same keys, dtypes and shapes.
#pragma once

#include <cstdint>
#include <exception>
#include <vector>

#include "tensor/torch_file.h"
#include "tests/fuzz/broken_promise.h"

namespace b3::fuzz {

inline void check_accepted_torch_file(const std::vector<uint8_t>& bytes,
                                      const NamedTensors& tensors) {
  const TorchTensorInfos listed = list_torch_state_dict(bytes, "fuzz input");
  if (listed.size() != tensors.size()) broken_promise("torch file: list and decode disagree");
  uint8_t checksum = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i].second;
    if (listed[i].first != tensors[i].first || listed[i].second.dtype != t.dtype() ||
        listed[i].second.shape != t.shape())
      broken_promise("torch file: list and decode disagree on a tensor");
    if (!t.is_contiguous() || !t.device().is_cpu())
      broken_promise("torch file: a tensor is not dense on the CPU");
    const auto* data = static_cast<const uint8_t*>(t.data_ptr());
    for (size_t b = 0; b < t.nbytes(); ++b) checksum ^= data[b];
  }
  // Keeps the reads from being optimized away.
  volatile uint8_t sink = checksum;
  (void)sink;
}

inline void check_torch_file(const std::vector<uint8_t>& bytes) {
  NamedTensors tensors;
  try {
    tensors = decode_torch_state_dict(bytes, "fuzz input");
  } catch (const std::exception& refusal) {
    check_refusal(refusal);
    return;
  }
  check_accepted_torch_file(bytes, tensors);
}

}  // namespace b3::fuzz
