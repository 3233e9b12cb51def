// StepArena (core/step_arena.h): which tensors it serves, how its buffer is sized, reused and replaced, and
// that a tensor outliving its step, or the arena, keeps valid memory.
#include <catch2/catch.hpp>

#include <thread>
#include <vector>

#include "core/allocator.h"
#include "core/memory.h"
#include "core/step_arena.h"
#include "core/tensor.h"

using namespace lora;

namespace {

// One "step": n tensors of `floats` elements each, filled and summed, then dropped.
double run_step(StepArena& arena, int n, int64_t floats) {
  StepArena::Scope in_arena(arena);
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    Tensor t = Tensor::full({floats}, static_cast<double>(i + 1));
    sum += t.at({floats - 1});
  }
  return sum;
}

}  // namespace

TEST_CASE("step arena: the first step sizes the buffer, later steps carve everything and allocate nothing",
          "[memory][step_arena]") {
  StepArena arena;
  CHECK(arena.capacity() == 0);
  CHECK(run_step(arena, 5, 100) == 15.0);  // learns the step's size: every tensor goes to the allocator
  CHECK(arena.stats().carved == 0);
  CHECK(arena.stats().overflowed == 5);
  CHECK(run_step(arena, 5, 100) == 15.0);  // the buffer is made: 5 x 448 bytes (rounded to 64), plus a quarter
  CHECK(arena.stats().replacements == 1);
  CHECK(arena.capacity() >= 5 * 448);
  CHECK(arena.stats().carved == 5);
  for (int step = 0; step < 10; ++step) {
    const memory::CpuAllocatorStats before = memory::cpu_allocator_stats();
    CHECK(run_step(arena, 5, 100) == 15.0);
    CHECK(memory::cpu_allocator_stats().allocations == before.allocations);
  }
  CHECK(arena.stats().carved == 55);
  CHECK(arena.stats().overflowed == 5);
  CHECK(arena.stats().replacements == 1);

  // A larger step overflows once, then the buffer is replaced by one that holds it.
  CHECK(run_step(arena, 8, 100) == 36.0);
  CHECK(arena.stats().overflowed > 5);
  CHECK(run_step(arena, 8, 100) == 36.0);
  CHECK(arena.stats().replacements == 2);
  const int64_t overflowed = arena.stats().overflowed;
  CHECK(run_step(arena, 8, 100) == 36.0);
  CHECK(arena.stats().overflowed == overflowed);
}

TEST_CASE("step arena: weights, other threads, other scopes and empty tensors are not carved",
          "[memory][step_arena]") {
  StepArena arena;
  run_step(arena, 2, 64);
  run_step(arena, 2, 64);
  const int64_t carved = arena.stats().carved;
  {
    StepArena::Scope in_arena(arena);
    Tensor weight = Tensor::empty({64}, DType::F32, Device::cpu(), MemoryCategory::FrozenParameter);
    Tensor state = Tensor::empty({64}, DType::F32, Device::cpu(), MemoryCategory::OptimizerState);
    Tensor nothing = Tensor::empty({0});
    std::thread other([] { Tensor t = Tensor::zeros({64}); });  // another thread: its allocator, not the arena
    other.join();
    CHECK(arena.stats().carved == carved);
    Tensor activation = Tensor::empty({64}, DType::F32, Device::cpu(), MemoryCategory::Activation);
    CHECK(arena.stats().carved == carved + 1);
  }
  Tensor outside = Tensor::zeros({64});  // the scope is closed
  CHECK(arena.stats().carved == carved + 1);
  CHECK(StepArena::current() == nullptr);
}

TEST_CASE("step arena: a tensor kept past its step pins its buffer and keeps its values", "[memory][step_arena]") {
  StepArena arena;
  run_step(arena, 4, 256);
  run_step(arena, 4, 256);
  Tensor kept;
  {
    StepArena::Scope in_arena(arena);
    kept = Tensor::full({256}, 7.0);
  }
  // The next steps may not reuse the kept tensor's bytes: they carve after it, or from a new buffer.
  for (int step = 0; step < 6; ++step) CHECK(run_step(arena, 4, 256) == 10.0);
  for (float v : kept.to_vector<float>()) REQUIRE(v == 7.0f);
  CHECK(arena.stats().replacements >= 2);  // the pinned buffer ran out of room and was replaced
  kept = Tensor();                         // frees the pinned buffer (the arena holds a newer one)
  const int64_t replacements = arena.stats().replacements;
  for (int step = 0; step < 4; ++step) CHECK(run_step(arena, 4, 256) == 10.0);
  CHECK(arena.stats().replacements == replacements);  // unpinned: reused from its start again
}

TEST_CASE("step arena: a tensor may outlive the arena it was carved from", "[memory][step_arena]") {
  Tensor survivor;
  {
    StepArena arena;
    run_step(arena, 2, 32);
    StepArena::Scope in_arena(arena);
    survivor = Tensor::full({32}, 3.0);
    REQUIRE(arena.stats().carved == 1);
  }  // the arena lets go of its buffer; the survivor's reference keeps it
  for (float v : survivor.to_vector<float>()) REQUIRE(v == 3.0f);
  survivor = Tensor();  // the last reference frees the buffer (ASan would report a leak or a double free)
}

TEST_CASE("step arena: nested scopes of one arena are one step; another arena's scope serves inside it",
          "[memory][step_arena]") {
  StepArena outer_arena, inner_arena;
  run_step(outer_arena, 3, 16);
  run_step(outer_arena, 3, 16);
  run_step(inner_arena, 1, 16);
  run_step(inner_arena, 1, 16);
  const int64_t outer_carved = outer_arena.stats().carved, inner_carved = inner_arena.stats().carved;
  {
    StepArena::Scope a(outer_arena);
    Tensor x = Tensor::zeros({16});
    {
      StepArena::Scope b(outer_arena);  // the same arena again: no new step, nothing reset under x
      Tensor y = Tensor::full({16}, 1.0);
      CHECK(x.data<float>() != y.data<float>());
    }
    {
      StepArena::Scope c(inner_arena);
      Tensor z = Tensor::zeros({16});
      CHECK(inner_arena.stats().carved == inner_carved + 1);
    }
    Tensor w = Tensor::zeros({16});
    CHECK(StepArena::current() == &outer_arena);
  }
  CHECK(outer_arena.stats().carved == outer_carved + 3);
}
