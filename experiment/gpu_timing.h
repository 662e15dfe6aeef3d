// Two helpers that every timed measurement on a GPU needs:
//
//   synchronize()       waits for the device's compute stream, so that a host
//                       clock read after it measures finished work (nothing
//                       on the CPU, where every op has finished on return)
//   is_out_of_memory()  whether an error is the device running out of memory
//                       (the caching allocator's error, or cuDNN's or
//                       cuBLAS's allocation failures)
//
// The training step itself is never here: every command times train_step()
// (train/trainer.h; experiment/step_timing.h), the step that training runs.
// Everything compiles in a CPU-only build; the CUDA calls then throw "built
// without CUDA", and the commands never reach them because
// require_device_available() stops them first.
#pragma once

#include <exception>

#include "tensor/device.h"

namespace b3::experiment {

// Blocks until every piece of work queued on `device`'s compute stream has
// finished (and rethrows a failure of that work); nothing on the CPU.
void synchronize(const Device& device);

// True for the caching allocator's "CUDA out of memory" error and for cuDNN's
// or cuBLAS's allocation failures.
bool is_out_of_memory(const std::exception& e);

}  // namespace b3::experiment
