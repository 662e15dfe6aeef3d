// init_process_group(): the ProcessGroup for how this process was started.
//
//   started by mpirun or srun, b3 built with MPI   MpiProcessGroup over MPI_COMM_WORLD
//   started by mpirun or srun, world size 1         either; the same results
//   started by mpirun with N > 1, b3 without MPI    std::runtime_error: running N
//                                                   independent copies that write the
//                                                   same files is never what was meant
//   a plain start                                   SingleProcessGroup (no MPI at all)
//
// How a launch is recognized: the environment the launchers set for each
// rank (OpenMPI's OMPI_COMM_WORLD_SIZE/RANK, PMIx's PMIX_RANK, MPICH's and
// Intel MPI's PMI_SIZE/PMI_RANK, Slurm's SLURM_NTASKS/SLURM_PROCID).
#pragma once

#include <memory>
#include <string>

#include "distributed/process_group.h"

namespace b3::dist {

// What the environment says about this process's launch.
struct LaunchInfo {
  bool launched = false;  // a launcher's variables are present
  int world_size = 1;     // as the launcher says (1 when unknown)
  int rank = 0;
  int local_rank = 0;  // among the ranks on this machine (picks the GPU)
  int local_size = 0;  // ranks on this machine (0 when the launcher does not say)
  std::string source;  // the variable the size came from, for messages
};

LaunchInfo read_launch_environment();

// Whether this b3 was built with MPI (B3_MPI).
bool built_with_mpi();

// The process group for this launch (see above). Call once per process,
// before any other thread starts; the group lives until the returned pointer
// is destroyed (with MPI: MPI_Finalize then).
std::unique_ptr<ProcessGroup> init_process_group();

// How a rank that failed ends the job: prints "b3 (rank r of N): error:
// <message>" on stderr, then group.abort(status), which ends every rank (so
// none is left waiting in a collective) and makes mpirun exit non-zero.
[[noreturn]] void abort_job(ProcessGroup& group, const std::string& message, int status = 1);

}  // namespace b3::dist
