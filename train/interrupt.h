// Graceful interruption: SIGINT and SIGTERM set a flag that a long loop polls between steps, so that it can
// save its state and exit cleanly instead of dying mid-step. A second signal while the first is pending
// ends the process at once (the default action), for a user who does not want to wait.
#pragma once

namespace lora::train {

// Installs the handlers (idempotent).
void install_interrupt_handlers();
// The signal received (SIGINT or SIGTERM), or 0.
int interrupt_signal();

}  // namespace lora::train
