// Storage: a refcounted block of device memory, charged to one memory category for its whole life. Its bytes come
// from the device's allocator, or from the StepArena open on this thread (core/step_arena.h) for a transient
// CPU block.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>

#include "core/allocator.h"
#include "core/device.h"
#include "core/memory.h"
#include "core/step_arena.h"

namespace lora {

class Storage {
 public:
  // Allocates `bytes` on `device` and charges them to `category`.
  Storage(size_t bytes, Device device, MemoryCategory category);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  MemoryCategory category() const { return category_; }
  // Moves this storage's bytes to another category (for instance a parameter that is frozen).
  void recharge(MemoryCategory category);

  // How many tape nodes hold this storage among what they saved: OpRecord::save adds one, Node::release takes
  // it away. The tape charges the bytes to Activation while any node holds them (autograd/tape.cpp).
  int add_tape_save() { return ++tape_saves_; }
  int remove_tape_save() { return --tape_saves_; }
  int tape_saves() const { return tape_saves_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  MemoryCategory category_;
  BlockLifetime lifetime_;  // from the category it was allocated under (recharge does not change it)
  StepArena::Buffer* arena_buffer_ = nullptr;  // the arena buffer the bytes were carved from; null: the allocator's
  std::atomic<int> tape_saves_{0};
};

}  // namespace lora
