// SIGINT/SIGTERM recorded for a clean stop (train/stop_signals.h).
#include "train/stop_signals.h"

#include <stdexcept>

namespace b3 {

namespace {

// The pending signal (0: none). See the header for why it is static.
volatile std::sig_atomic_t pending_signal = 0;
volatile std::sig_atomic_t installed = 0;

void record_signal(int number) {
  if (pending_signal == SIGINT && number == SIGINT) {
    std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C: the default, now
    std::raise(SIGINT);
    return;
  }
  pending_signal = number;
}

}  // namespace

StopSignals::StopSignals() {
  if (installed != 0) throw std::logic_error("StopSignals: only one may exist at a time");
  installed = 1;
  pending_signal = 0;
  struct sigaction action {};
  action.sa_handler = record_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // reads and waits in progress go on
  sigaction(SIGINT, &action, &previous_int_);
  sigaction(SIGTERM, &action, &previous_term_);
}

StopSignals::~StopSignals() {
  sigaction(SIGINT, &previous_int_, nullptr);
  sigaction(SIGTERM, &previous_term_, nullptr);
  installed = 0;
}

bool StopSignals::requested() const { return pending_signal != 0; }
int StopSignals::signal_number() const { return static_cast<int>(pending_signal); }
const char* StopSignals::signal_name() const {
  switch (pending_signal) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    default: return "";
  }
}

}  // namespace b3
