// The MPI process group (distributed/process_group.h) over MPI_COMM_WORLD:
// MPI_Init_thread at creation (MPI_THREAD_SERIALIZED: one thread at a time
// may call MPI, so a communication thread can run collectives while the main
// thread computes), errors returned rather than fatal so each call is checked
// and reported with its file and line, MPI_Finalize when the group is
// destroyed. Defined in distributed/mpi_process_group.cpp, built only with
// B3_MPI; use init_process_group() (distributed/launch.h) rather than this.
#pragma once

#include <memory>

#include "distributed/process_group.h"

namespace b3::dist {

std::unique_ptr<ProcessGroup> make_mpi_process_group();

}  // namespace b3::dist
