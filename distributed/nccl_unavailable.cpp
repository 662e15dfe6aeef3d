// NcclCommunicator in a build without NCCL (distributed/nccl_communicator.h):
// every entry point throws a clear "built without NCCL" error, so code that
// names the communicator links in every build and fails plainly if it is used.
#include <stdexcept>

#include "distributed/nccl_communicator.h"

namespace b3::dist {

struct NcclCommunicator::State {};

namespace {

[[noreturn]] void throw_without_nccl() {
  throw std::runtime_error(
      "NcclCommunicator: b3 was built without NCCL (it needs the CUDA backend, MPI and "
      "NCCL's nccl.h and libnccl, which the CUDA toolkit ships; configure on such a machine)");
}

}  // namespace

bool built_with_nccl() { return false; }

NcclCommunicator::NcclCommunicator(ProcessGroup&, int, double) { throw_without_nccl(); }
NcclCommunicator::~NcclCommunicator() = default;
int NcclCommunicator::rank() const { throw_without_nccl(); }
int NcclCommunicator::size() const { throw_without_nccl(); }
int NcclCommunicator::device() const { throw_without_nccl(); }
void NcclCommunicator::all_reduce_mean(Tensor&) { throw_without_nccl(); }
void NcclCommunicator::broadcast(const std::vector<Tensor>&, int) { throw_without_nccl(); }
void NcclCommunicator::compute_waits() { throw_without_nccl(); }

}  // namespace b3::dist
