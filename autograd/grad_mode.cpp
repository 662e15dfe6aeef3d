// The thread-local grad-mode flag (see grad_mode.h for why it is thread_local).
#include "autograd/grad_mode.h"

namespace b3 {

namespace {
thread_local bool grad_enabled = true;
}

bool GradMode::is_enabled() { return grad_enabled; }
void GradMode::set_enabled(bool enabled) { grad_enabled = enabled; }

}  // namespace b3
