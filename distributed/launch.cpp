// Recognizing a launch by mpirun or srun from the environment, and choosing
// the process group (distributed/launch.h). The MPI group itself is made in
// distributed/mpi_process_group.cpp, which only builds with B3_MPI.
#include "distributed/launch.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "distributed/mpi_process_group.h"

namespace b3::dist {

namespace {

// The integer value of environment variable `name`, or -1 when unset or not a number.
int env_int(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return -1;
  char* end = nullptr;
  const long parsed = std::strtol(value, &end, 10);
  if (*end != '\0' || parsed < 0 || parsed > 1 << 24) return -1;
  return static_cast<int>(parsed);
}

}  // namespace

void SingleProcessGroup::check_root(int root) {
  if (root != 0) {
    throw std::invalid_argument("broadcast: root rank " + std::to_string(root) +
                                " does not exist in a world of 1");
  }
}

LaunchInfo read_launch_environment() {
  struct Source {
    const char* size;
    const char* rank;
    const char* local_rank;
    const char* local_size;
  };
  static constexpr Source kSources[] = {
      {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
       "OMPI_COMM_WORLD_LOCAL_SIZE"},
      {"PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"},
      {"SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"},
  };
  LaunchInfo info;
  for (const Source& s : kSources) {
    const int size = env_int(s.size);
    if (size < 1) continue;
    info.launched = true;
    info.world_size = size;
    info.rank = std::max(env_int(s.rank), 0);
    info.local_rank = std::max(env_int(s.local_rank), 0);
    info.local_size = std::max(env_int(s.local_size), 0);  // Slurm's "2(x3)" form: unknown
    info.source = std::string(s.size) + "=" + std::to_string(size);
    return info;
  }
  if (std::getenv("PMIX_RANK") != nullptr) {  // PMIx without a size variable
    info.launched = true;
    info.rank = std::max(env_int("PMIX_RANK"), 0);
    info.source = "PMIX_RANK";
  }
  return info;
}

bool built_with_mpi() {
#if defined(B3_WITH_MPI)
  return true;
#else
  return false;
#endif
}

std::unique_ptr<ProcessGroup> init_process_group() {
  const LaunchInfo launch = read_launch_environment();
  if (!launch.launched) return std::make_unique<SingleProcessGroup>();
#if defined(B3_WITH_MPI)
  return make_mpi_process_group();
#else
  if (launch.world_size > 1) {
    throw std::runtime_error(
        "this process was started as rank " + std::to_string(launch.rank) + " of " +
        std::to_string(launch.world_size) + " (" + launch.source +
        "), but this b3 was built without MPI, so the ranks could not work together: each "
        "would train alone and write the same files. Install OpenMPI (scripts/setup.sh, or "
        "apt-get install openmpi-bin libopenmpi-dev) and rebuild (cmake -DB3_MPI=ON)");
  }
  return std::make_unique<SingleProcessGroup>();
#endif
}

void abort_job(ProcessGroup& group, const std::string& message, int status) {
  std::fprintf(stderr, "b3 (rank %d of %d): error: %s\n", group.rank(), group.size(),
               message.c_str());
  group.abort(status);
  std::abort();  // not reached (abort() does not return; the compiler cannot see it through the
                 // virtual call)
}

}  // namespace b3::dist
