// ProcessGroup: the ranks of a data-parallel job and the collectives they
// use, as torch.distributed's ProcessGroup: rank and size, in-place sum
// all-reduce and broadcast of host buffers, an all-gather of strings (for
// comparing configurations), and abort, which ends every rank at once.
//
// Two implementations:
//   SingleProcessGroup (below): a world of one, for a plain run without
//     mpirun; every collective is the identity. No MPI needed.
//   MpiProcessGroup (distributed/mpi_process_group.h, built with B3_MPI):
//     the processes mpirun (or srun) started, over MPI_COMM_WORLD.
// init_process_group() (distributed/launch.h) picks the right one.
//
// Collectives are blocking and must be called by every rank in the same
// order with the same sizes, as in MPI. Errors throw std::runtime_error
// naming the call; abort() is how a failing rank ends the job instead of
// leaving the others waiting in a collective forever.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace b3::dist {

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "single" or "mpi"

  // data[i] = the sum over ranks of data[i], on every rank.
  virtual void all_reduce_sum(float* data, size_t count) = 0;
  virtual void all_reduce_sum(double* data, size_t count) = 0;
  virtual void all_reduce_sum(int64_t* data, size_t count) = 0;
  // Rank `root`'s `nbytes` at `data` copied to every rank's `data`.
  virtual void broadcast(void* data, size_t nbytes, int root) = 0;
  // Every rank's `value`, indexed by rank, on every rank.
  virtual std::vector<std::string> all_gather(const std::string& value) = 0;
  // Blocks until every rank has called it.
  virtual void barrier() = 0;
  // Ends every rank of the job with exit status `code` (MPI_Abort); the
  // caller prints its message first. Never returns.
  [[noreturn]] virtual void abort(int code) = 0;
};

// A world of one process: rank 0 of 1, collectives that leave data as it is.
class SingleProcessGroup final : public ProcessGroup {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "single"; }
  void all_reduce_sum(float*, size_t) override {}
  void all_reduce_sum(double*, size_t) override {}
  void all_reduce_sum(int64_t*, size_t) override {}
  void broadcast(void*, size_t, int root) override { check_root(root); }
  std::vector<std::string> all_gather(const std::string& value) override { return {value}; }
  void barrier() override {}
  [[noreturn]] void abort(int code) override {
    std::fflush(nullptr);
    std::_Exit(code);
  }

 private:
  static void check_root(int root);
};

}  // namespace b3::dist
