// TapeGuard: makes another tape this thread's tape for a scope. Activation checkpointing records a
// block's recomputation on a tape of its own while the backward of the outer tape is running.
#pragma once

#include "autograd/tape.h"

namespace lora::autograd {

class TapeGuard {
 public:
  explicit TapeGuard(Tape& tape);
  ~TapeGuard();  // the previous tape is current again
  TapeGuard(const TapeGuard&) = delete;
  TapeGuard& operator=(const TapeGuard&) = delete;

 private:
  Tape* previous_;
};

}  // namespace lora::autograd
