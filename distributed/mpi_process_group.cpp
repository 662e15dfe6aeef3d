// MpiProcessGroup (distributed/mpi_process_group.h): each collective of
// ProcessGroup as its MPI call on a duplicate of MPI_COMM_WORLD, every call
// checked with B3_MPI_CHECK. Large buffers go in pieces of at most 2^30
// elements, since MPI counts are int.
#include "distributed/mpi_process_group.h"

#include <mpi.h>

#if defined(__SANITIZE_ADDRESS__)
#define B3_WITH_LEAK_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define B3_WITH_LEAK_SANITIZER 1
#endif
#endif
#ifdef B3_WITH_LEAK_SANITIZER
#include <sanitizer/lsan_interface.h>
#endif

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

namespace b3::dist {

namespace {

[[noreturn]] void throw_mpi_error(int status, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  if (MPI_Error_string(status, text, &length) != MPI_SUCCESS) text[0] = '\0';
  throw std::runtime_error(std::string(call) + " failed: " + text + " (MPI error " +
                           std::to_string(status) + ", " + file + ":" + std::to_string(line) + ")");
}

#define B3_MPI_CHECK(call)                                        \
  do {                                                            \
    const int b3_mpi_status_ = (call);                            \
    if (b3_mpi_status_ != MPI_SUCCESS) {                          \
      throw_mpi_error(b3_mpi_status_, #call, __FILE__, __LINE__); \
    }                                                             \
  } while (0)

constexpr size_t kMaxCount = size_t{1} << 30;  // elements per MPI call (counts are int)

// OpenMPI loads its components with dlopen and unloads them (dlclose) in
// MPI_Init, those it does not select, and in MPI_Finalize, the others; what
// they leave allocated reaches LeakSanitizer with no module or function to
// name, or to suppress by (scripts/sanitizers/lsan.supp). An ASan build
// (make test-sanitize) therefore treats what MPI_Init allocates as OpenMPI's
// (LeakSanitizer's own API for third-party initialization), and checks this
// process for leaks just before MPI_Finalize, while the rest of OpenMPI's
// memory is still reachable; LeakSanitizer then skips its check at exit.
// Elsewhere both do nothing.
class OpenMpiInitAllocations {
 public:
#ifdef B3_WITH_LEAK_SANITIZER
  OpenMpiInitAllocations() { __lsan_disable(); }
  ~OpenMpiInitAllocations() { __lsan_enable(); }
#else
  OpenMpiInitAllocations() {}
#endif
  OpenMpiInitAllocations(const OpenMpiInitAllocations&) = delete;
  OpenMpiInitAllocations& operator=(const OpenMpiInitAllocations&) = delete;
};

void check_leaks_before_mpi_finalize() {
#ifdef B3_WITH_LEAK_SANITIZER
  __lsan_do_leak_check();
#endif
}

class MpiProcessGroup final : public ProcessGroup {
 public:
  MpiProcessGroup() {
    int initialized = 0;
    B3_MPI_CHECK(MPI_Initialized(&initialized));
    if (initialized) {
      throw std::logic_error("init_process_group: MPI is initialized already (call it once)");
    }
    int provided = 0;
    {
      const OpenMpiInitAllocations not_b3s;
      B3_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided));
    }
    if (provided < MPI_THREAD_SERIALIZED) {
      MPI_Finalize();
      throw std::runtime_error(
          "init_process_group: this MPI offers no MPI_THREAD_SERIALIZED support, which b3's "
          "communication thread needs");
    }
    B3_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    B3_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm_));
    B3_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    B3_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    B3_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  }

  ~MpiProcessGroup() override {
    // Errors here have nobody to go to; MPI_Finalize waits for no one but
    // needs every rank to call it, which a normal exit does.
    check_leaks_before_mpi_finalize();
    if (MPI_Comm_free(&comm_) != MPI_SUCCESS) std::fprintf(stderr, "b3: MPI_Comm_free failed\n");
    if (MPI_Finalize() != MPI_SUCCESS) std::fprintf(stderr, "b3: MPI_Finalize failed\n");
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }

  void all_reduce_sum(float* data, size_t count) override { reduce(data, count, MPI_FLOAT); }
  void all_reduce_sum(double* data, size_t count) override { reduce(data, count, MPI_DOUBLE); }
  void all_reduce_sum(int64_t* data, size_t count) override { reduce(data, count, MPI_INT64_T); }

  void broadcast(void* data, size_t nbytes, int root) override {
    check_root(root, "broadcast");
    auto* bytes = static_cast<char*>(data);
    for (size_t done = 0; done < nbytes;) {
      const size_t piece = std::min(kMaxCount, nbytes - done);
      B3_MPI_CHECK(MPI_Bcast(bytes + done, static_cast<int>(piece), MPI_BYTE, root, comm_));
      done += piece;
    }
  }

  std::vector<std::string> all_gather(const std::string& value) override {
    if (value.size() > kMaxCount) throw std::invalid_argument("all_gather: value too long");
    const int length = static_cast<int>(value.size());
    std::vector<int> lengths(static_cast<size_t>(size_));
    B3_MPI_CHECK(MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, comm_));
    std::vector<int> offsets(static_cast<size_t>(size_), 0);
    size_t total = 0;
    for (int r = 0; r < size_; ++r) {
      offsets[static_cast<size_t>(r)] = static_cast<int>(total);
      total += static_cast<size_t>(lengths[static_cast<size_t>(r)]);
      if (total > kMaxCount) throw std::invalid_argument("all_gather: values too long");
    }
    std::string gathered(total, '\0');
    B3_MPI_CHECK(MPI_Allgatherv(value.data(), length, MPI_CHAR, gathered.data(), lengths.data(),
                                offsets.data(), MPI_CHAR, comm_));
    std::vector<std::string> out;
    for (int r = 0; r < size_; ++r) {
      out.push_back(gathered.substr(static_cast<size_t>(offsets[static_cast<size_t>(r)]),
                                    static_cast<size_t>(lengths[static_cast<size_t>(r)])));
    }
    return out;
  }

  void barrier() override { B3_MPI_CHECK(MPI_Barrier(comm_)); }

  [[noreturn]] void abort(int code) override {
    std::fflush(nullptr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; should it, exit all the same
  }

 private:
  void reduce(void* data, size_t count, MPI_Datatype type) {
    int type_size = 0;
    B3_MPI_CHECK(MPI_Type_size(type, &type_size));
    const size_t element = static_cast<size_t>(type_size);
    auto* bytes = static_cast<char*>(data);
    for (size_t done = 0; done < count;) {
      const size_t piece = std::min(kMaxCount, count - done);
      B3_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, bytes + done * element, static_cast<int>(piece),
                                 type, MPI_SUM, comm_));
      done += piece;
    }
  }

  void check_root(int root, const char* op) const {
    if (root < 0 || root >= size_) {
      throw std::invalid_argument(std::string(op) + ": root rank " + std::to_string(root) +
                                  " does not exist in a world of " + std::to_string(size_));
    }
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace

std::unique_ptr<ProcessGroup> make_mpi_process_group() {
  return std::make_unique<MpiProcessGroup>();
}

}  // namespace b3::dist
