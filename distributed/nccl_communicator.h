// NcclCommunicator: NCCL collectives on CUDA device buffers, for data
// parallelism on GPUs (distributed/data_parallel.h uses it when the model is
// on a CUDA device), as PyTorch's ProcessGroupNCCL:
//
//   - bootstrapped over a host ProcessGroup (MPI): rank 0 makes the
//     ncclUniqueId, the group broadcasts it, every rank joins on its GPU;
//   - collectives run on a stream of the communicator's own, so they overlap
//     the compute stream's work: each one first waits (an event, no host
//     wait) for everything queued on the device's compute stream so far, and
//     compute_waits() makes the compute stream wait for every collective
//     queued so far;
//   - a watchdog thread follows each collective; one that has not finished
//     within the timeout (a rank died or hangs), or an asynchronous NCCL
//     error, prints the rank's message, aborts the communicator
//     (ncclCommAbort) and ends the job through the bootstrap group's abort(),
//     so a job never hangs in a collective.
//
// The header compiles in every build and includes no CUDA or NCCL header.
// Without NCCL (B3_WITH_NCCL, found with the CUDA toolkit when MPI is
// built) the constructor throws "built without NCCL".
#pragma once

#include <memory>
#include <vector>

#include "distributed/process_group.h"
#include "tensor/tensor.h"

namespace b3::dist {

inline constexpr double kDefaultNcclTimeoutSeconds = 300.0;

// Whether this b3 was built with NCCL.
bool built_with_nccl();

class NcclCommunicator {
 public:
  // Every rank of `bootstrap` calls it together, each with its own CUDA
  // device index (one GPU per rank: the local rank's).
  NcclCommunicator(ProcessGroup& bootstrap, int device,
                   double timeout_seconds = kDefaultNcclTimeoutSeconds);
  ~NcclCommunicator();  // waits (up to the timeout) for the collectives in flight
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const;
  int size() const;
  int device() const;

  // `flat` (dense, on this communicator's device, f32/f64/f16) replaced by
  // its mean over the ranks, in place (ncclAvg). Queued; returns at once.
  void all_reduce_mean(Tensor& flat);
  // Rank `root`'s values of every tensor (dense, on the device) copied to
  // all ranks, in place, in one NCCL group. Queued; returns at once.
  void broadcast(const std::vector<Tensor>& tensors, int root = 0);
  // Work queued on the device's compute stream from now on waits for every
  // collective queued so far (an event; the host does not wait).
  void compute_waits();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace b3::dist
