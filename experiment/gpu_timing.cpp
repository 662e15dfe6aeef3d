// Synchronizing the compute stream and recognizing out-of-memory errors (see
// gpu_timing.h).
#include "experiment/gpu_timing.h"

#include <string>

#include "tensor/cuda_stream.h"

namespace b3::experiment {

void synchronize(const Device& device) {
  if (device.is_cuda()) cuda::synchronize(cuda::compute_stream(device.index));
}

bool is_out_of_memory(const std::exception& e) {
  const std::string what = e.what();
  for (const char* sign :
       {"out of memory", "OUT_OF_MEMORY", "ALLOC_FAILED", "resource allocation failed"}) {
    if (what.find(sign) != std::string::npos) return true;
  }
  return false;
}

}  // namespace b3::experiment
