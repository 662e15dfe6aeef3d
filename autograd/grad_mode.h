// Grad mode: whether ops record autograd nodes, and NoGradGuard to switch it
// off for a scope (evaluation, optimizer updates).
//
// The flag is thread_local, as PyTorch's is: it is the one piece of ambient
// state in b3, because threading a "record?" flag through every op call would
// bury the math. It is scoped by the guard and never shared across threads.
#pragma once

namespace b3 {

class GradMode {
 public:
  static bool is_enabled();
  static void set_enabled(bool enabled);
};

// While alive, ops record nothing; restores the previous mode on exit.
class NoGradGuard {
 public:
  NoGradGuard() : previous_(GradMode::is_enabled()) { GradMode::set_enabled(false); }
  ~NoGradGuard() { GradMode::set_enabled(previous_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace b3
