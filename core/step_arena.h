// StepArena: one buffer, kept for the life of its owner, out of which a step that runs again and again (a
// decode step) takes its tensors, so that in steady state the step asks the allocator for nothing.
//
// While a StepArena::Scope is open on a thread, that thread's new CPU tensors of a transient category
// (activations, workspace: not weights or optimizer state) are carved from the arena's buffer one after the
// other (a bump pointer, 64-byte aligned); freeing them only counts them. When a scope opens and nothing
// carved earlier is still alive, the buffer is reused from its start. A request that does not fit goes to the
// allocator as usual, and the bytes the scope asked for in all are remembered: the next scope that finds the
// buffer free replaces it with one that big (plus a quarter). After a step or two of each shape the buffer
// holds every step whole, and a steady step allocates nothing. Sized by what the steps asked for, not by a
// guess: the arena is "buffers sized once per engine" without a list of them.
//
// Safety does not depend on the step: a tensor that outlives its step (kept by the caller) pins the buffer it
// was carved from. Such a buffer is not reused while it lives; when the arena replaces or drops it, the last of
// its tensors frees it. The tracker (core/memory.h) counts carved tensors under their categories like any
// other; the buffer itself is held on top, as the allocator's cache is (capacity()).
//
// Other threads (an op's OpenMP workers) and other devices are not affected: a scope is per thread and CPU
// only. Not thread-safe: one owner thread opens scopes; tensors may be freed on any thread.
#pragma once

#include <cstddef>
#include <cstdint>

namespace lora {

class StepArena {
 public:
  // A buffer and the number of references to it: the arena's own (while it is the arena's current buffer)
  // and one per carved tensor alive. The last reference frees it.
  struct Buffer;

  struct Stats {
    int64_t carved = 0;       // tensors served from the buffer
    int64_t overflowed = 0;   // tensors that did not fit and went to the allocator
    int64_t replacements = 0; // times the buffer was (re)made larger
  };

  StepArena() = default;
  ~StepArena();
  StepArena(const StepArena&) = delete;
  StepArena& operator=(const StepArena&) = delete;

  // Opens the arena on this thread until the scope ends (scopes nest; the innermost serves).
  class Scope {
   public:
    explicit Scope(StepArena& arena);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    StepArena* previous_;
  };

  size_t capacity() const;  // bytes of the current buffer (0 before the first step)
  const Stats& stats() const { return stats_; }

  // Used by Storage: the arena open on this thread, or null.
  static StepArena* current();
  // `bytes` carved from the current buffer (its reference taken into *buffer), or null when they do not fit.
  void* carve(size_t bytes, Buffer** buffer);
  // Drops a carved tensor's reference to its buffer.
  static void release(Buffer* buffer);

 private:
  void begin_step();

  Buffer* buffer_ = nullptr;
  size_t asked_ = 0;       // bytes asked for since the scope opened (carved or not), rounded to 64
  size_t most_asked_ = 0;  // the most one scope asked for: the size the buffer grows to
  Stats stats_;
};

}  // namespace lora
