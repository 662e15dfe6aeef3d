// The memory boundary (`b3 maxbatch`): the largest batch size whose training
// step fits in GPU memory for a model, image size and layout (the seed
// experiment found 515 on a 16 GB V100 at 224x224, f16).
//
// A probe builds a fresh model on the GPU (channels_last weights for NHWC),
// Adam (PyTorch's default lr 1e-3) and, in mixed precision, a GradScaler,
// runs `steps` train_step() calls (train/trainer.h, the step training runs)
// on a synthetic batch and reports whether it ran out of memory (an error
// that experiment::is_out_of_memory() recognizes; any other error stops the
// search). report::search_largest doubles from `start` until a probe fails,
// then bisects. Each probe frees everything it allocated and gives the
// allocator's cached blocks back to the device before the next one starts.
// Each fitting probe comes with the allocator's peak memory: bytes in
// tensors (peak active) and bytes held from the device (peak reserved).
//
// GPU only: on the CPU there is no clean out-of-memory boundary to find
// (memory is virtual; the operating system swaps, or kills the process,
// rather than failing an allocation), so maxbatch_device() explains this.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "experiment/report.h"
#include "tensor/device.h"

namespace b3::experiment {

struct MaxBatchConfig {
  std::string model = "mobilenet_v3_large";
  int64_t image_size = 224;
  std::string format = "nhwc";  // nchw | nhwc
  int64_t start = 256;          // first batch size tried (then doubled)
  int64_t limit = 1 << 16;      // largest batch size tried
  int64_t steps = 2;            // training steps per probe
  bool amp = true;              // f16 mixed precision with a GradScaler
};

// Peak device memory of one probe (the caching allocator's statistics).
struct ProbeMemory {
  double peak_active_bytes = 0.0;    // most bytes handed out to tensors at once
  double peak_reserved_bytes = 0.0;  // most bytes held from the device (active + cached)
};

// The CUDA device for --device `name`: throws std::invalid_argument with the
// reason for "cpu", and the build's or the driver's reason when CUDA cannot
// be used.
Device maxbatch_device(const std::string& name);

// One probe: can `config.steps` training steps at `batch` run on `device`?
// False on out-of-memory; `memory` holds the peaks when it fits.
bool probe_fits(int64_t batch, const MaxBatchConfig& config, const Device& device,
                ProbeMemory& memory);

struct MaxBatchResult {
  report::SearchResult search;               // largest (0: not even 1), every probe
  std::map<int64_t, ProbeMemory> memory_of;  // the batches that fit
};

// The search; `on_probe` (may be empty) sees each probe as it ends.
MaxBatchResult find_max_batch(
    const MaxBatchConfig& config, const Device& device,
    const std::function<void(int64_t batch, bool fits, const ProbeMemory&)>& on_probe = {});

}  // namespace b3::experiment
