// SIGINT/SIGTERM handlers that record the signal; the second one restores the default action.
#include "train/interrupt.h"

#include <signal.h>

#include <atomic>

namespace lora::train {
namespace {

std::atomic<int> g_signal{0};

extern "C" void on_interrupt(int sig) {
  if (g_signal.exchange(sig) != 0) {  // a second signal: stop waiting
    ::signal(sig, SIG_DFL);
    ::raise(sig);
  }
}

}  // namespace

void install_interrupt_handlers() {
  struct sigaction action {};
  action.sa_handler = on_interrupt;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

int interrupt_signal() {
  return g_signal.load();
}

}  // namespace lora::train
