// StepArena (core/step_arena.h): the bump-pointer buffer, its references, and when it is reused or replaced.
#include "core/step_arena.h"

#include <algorithm>
#include <atomic>

#include "core/allocator.h"

namespace lora {

struct StepArena::Buffer {
  std::byte* base = nullptr;
  size_t capacity = 0;
  size_t used = 0;
  std::atomic<int64_t> references{1};  // the arena's own, until it lets go of the buffer
};

namespace {

thread_local StepArena* open_arena = nullptr;

size_t round_up_64(size_t n) {
  return (n + kCpuAlignment - 1) / kCpuAlignment * kCpuAlignment;
}

StepArena::Buffer* make_buffer(size_t capacity) {
  auto* buffer = new StepArena::Buffer;
  buffer->capacity = capacity;
  // Lasting: served at its size, from a mapping of its own when large, and given back when freed.
  buffer->base = static_cast<std::byte*>(
      allocator_for(Device::cpu()).allocate(capacity, Device::cpu(), BlockLifetime::Lasting));
  return buffer;
}

}  // namespace

StepArena::~StepArena() {
  if (buffer_) release(buffer_);
}

StepArena::Scope::Scope(StepArena& arena) : previous_(open_arena) {
  if (previous_ != &arena) arena.begin_step();
  open_arena = &arena;
}

StepArena::Scope::~Scope() {
  StepArena* arena = open_arena;
  if (previous_ != arena) arena->most_asked_ = std::max(arena->most_asked_, arena->asked_);
  open_arena = previous_;
}

StepArena* StepArena::current() {
  return open_arena;
}

size_t StepArena::capacity() const {
  return buffer_ ? buffer_->capacity : 0;
}

// A buffer that nothing carved still uses starts over from its beginning, unless the steps have asked for
// more than it holds: then it is replaced by one of the size they asked for, plus a quarter (so that a step
// that grows a little each time, like attention over a longer context, does not replace it every step). A
// buffer that carved tensors still pin is used on, or replaced when what is left of it cannot hold a step.
void StepArena::begin_step() {
  asked_ = 0;
  if (most_asked_ == 0) return;  // nothing asked yet: no buffer until a step has shown its size
  const bool pinned = buffer_ && buffer_->references.load(std::memory_order_acquire) > 1;
  if (buffer_ && !pinned) buffer_->used = 0;
  const size_t room = buffer_ ? buffer_->capacity - buffer_->used : 0;
  if (room >= most_asked_) return;
  if (buffer_) release(buffer_);
  buffer_ = make_buffer(round_up_64(most_asked_ + most_asked_ / 4));
  ++stats_.replacements;
}

void* StepArena::carve(size_t bytes, Buffer** buffer) {
  const size_t size = round_up_64(bytes);
  asked_ += size;
  if (!buffer_ || buffer_->capacity - buffer_->used < size) {
    ++stats_.overflowed;
    return nullptr;
  }
  void* p = buffer_->base + buffer_->used;
  buffer_->used += size;
  buffer_->references.fetch_add(1, std::memory_order_relaxed);
  *buffer = buffer_;
  ++stats_.carved;
  return p;
}

void StepArena::release(Buffer* buffer) {
  if (buffer->references.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  allocator_for(Device::cpu()).deallocate(buffer->base, buffer->capacity, Device::cpu(), BlockLifetime::Lasting);
  delete buffer;
}

}  // namespace lora
