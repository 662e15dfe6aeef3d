// StopSignals: SIGINT and SIGTERM ask a training run to stop cleanly instead
// of killing it. While a StopSignals lives, either signal is only recorded;
// the loop asks requested() after every step (TrainRunConfig's
// stop_requested), writes a checkpoint and ends; the command then exits with
// 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as a shell
// reports a process those signals ended. A second SIGINT while the first is
// pending ends the process at once (the default action), for a step that
// hangs.
//
// A signal handler can only reach variables of static storage, so the
// pending signal is a process-wide std::sig_atomic_t, written only by the
// handler and read through this class, beside a second one that lets only
// one StopSignals exist at a time.
#pragma once

#include <csignal>

namespace b3 {

class StopSignals {
 public:
  StopSignals();   // installs the handlers; throws std::logic_error if one exists
  ~StopSignals();  // restores the previous handlers
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  bool requested() const;
  int signal_number() const;  // 0 while none came
  int exit_status() const { return 128 + signal_number(); }
  const char* signal_name() const;  // "SIGINT", "SIGTERM" or ""

 private:
  struct sigaction previous_int_ {
  }, previous_term_{};
};

}  // namespace b3
