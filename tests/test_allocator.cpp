// The CPU allocator's cache (core/allocator.h): size classes, reuse of freed blocks, the tracker's live bytes
// staying exact while the cache holds blocks, trimming and the limit; and a steady-state decode step of the
// serving engine taking nothing from the system.
#include <catch2/catch.hpp>

#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/memory.h"
#include "core/tensor.h"
#include "models/registry.h"
#include "serve/adapter_set.h"
#include "serve/decode_engine.h"

using namespace lora;

TEST_CASE("allocator: size classes are multiples of 64 up to 4 KiB, then four per power of two",
          "[memory][allocator]") {
  CHECK(memory::size_class(0) == 0);
  CHECK(memory::size_class(1) == 64);
  CHECK(memory::size_class(64) == 64);
  CHECK(memory::size_class(65) == 128);
  CHECK(memory::size_class(4096) == 4096);
  CHECK(memory::size_class(4097) == 5120);
  CHECK(memory::size_class(5121) == 6144);
  CHECK(memory::size_class(8192) == 8192);
  CHECK(memory::size_class(8193) == 10240);
  CHECK(memory::size_class((size_t(1) << 30) + 1) == (size_t(5) << 28));
  // Never below the request, never more than 25% above it, and a class is its own class.
  for (size_t bytes = 1; bytes < (size_t(1) << 26); bytes = bytes * 9 / 8 + 1) {
    const size_t c = memory::size_class(bytes);
    INFO(bytes);
    CHECK(c >= bytes);
    CHECK(c % kCpuAlignment == 0);
    CHECK(double(c) <= 1.25 * double(bytes) + 64);
    CHECK(memory::size_class(c) == c);
  }
}

TEST_CASE("allocator: a freed block is reused for its class and the tracker's live bytes stay exact",
          "[memory][allocator]") {
  MemoryTracker& tracker = MemoryTracker::instance();
  const int64_t live0 = tracker.live(MemoryCategory::Workspace);
  void* first = nullptr;
  {
    Tensor a = Tensor::zeros({1000, 257});  // 1,028,000 bytes: class 1,048,576
    first = a.raw_data();
    CHECK(tracker.live(MemoryCategory::Workspace) - live0 == 1000 * 257 * 4);
  }
  CHECK(tracker.live(MemoryCategory::Workspace) == live0);
  const memory::CpuAllocatorStats before = memory::cpu_allocator_stats();
  CHECK(before.cached_bytes >= int64_t(memory::size_class(1000 * 257 * 4)));
  {
    Tensor b = Tensor::zeros({1001, 257});  // another size of the same class: the same block, no system call
    const memory::CpuAllocatorStats after = memory::cpu_allocator_stats();
    CHECK(b.raw_data() == first);
    CHECK(after.allocations == before.allocations + 1);
    CHECK(after.system_allocations == before.system_allocations);
    CHECK(after.cached_bytes == before.cached_bytes - int64_t(memory::size_class(1000 * 257 * 4)));
    // The tracker counts what the tensor asked for, not its class.
    CHECK(tracker.live(MemoryCategory::Workspace) - live0 == 1001 * 257 * 4);
  }
  CHECK(tracker.live(MemoryCategory::Workspace) == live0);
}

TEST_CASE("allocator: weights and optimizer state are served in whole pages, not rounded to a class, and not cached",
          "[memory][allocator]") {
  // A 1280 x 5120 q4_0 matrix: 3,686,400 bytes, which the classes serve with 4 MiB (+13.8%).
  const int64_t bytes = 3686400;
  CHECK(memory::size_class(bytes) == (size_t(4) << 20));
  CHECK(memory::lasting_size(bytes) == 3686400);  // already whole pages (900 of 4 KiB)
  CHECK(memory::lasting_size(bytes + 1) == 3686400 + 4096);
  CHECK(memory::lasting_size(4100) == 4160);  // the class would be 5,120
  CHECK(memory::size_class(4100) == 5120);
  Allocator& cpu = allocator_for(Device::cpu());
  for (const MemoryCategory category :
       {MemoryCategory::FrozenParameter, MemoryCategory::TrainableParameter, MemoryCategory::OptimizerState}) {
    INFO(category_name(category));
    const size_t reserved0 = cpu.reserved_bytes(Device::cpu());
    const memory::CpuAllocatorStats before = memory::cpu_allocator_stats();
    {
      Tensor w = Tensor::empty({bytes / 4}, DType::F32, Device::cpu(), category);
      w.zero_();
      CHECK(cpu.reserved_bytes(Device::cpu()) == reserved0);  // nothing held beyond the request
      CHECK(memory::cpu_allocator_stats().system_allocations == before.system_allocations + 1);
    }
    const memory::CpuAllocatorStats after = memory::cpu_allocator_stats();
    CHECK(after.system_frees == before.system_frees + 1);  // given back, not cached
    CHECK(after.cached_bytes == before.cached_bytes);
    CHECK(cpu.reserved_bytes(Device::cpu()) == reserved0);
  }
  // The same request as a step's workspace: its class, and cached when freed.
  const memory::CpuAllocatorStats before = memory::cpu_allocator_stats();
  { Tensor t = Tensor::empty({bytes / 4}, DType::F32, Device::cpu(), MemoryCategory::Workspace); }
  CHECK(memory::cpu_allocator_stats().cached_bytes == before.cached_bytes + int64_t(size_t(4) << 20));
  // A parameter recharged from another category keeps the block it was allocated as, and frees it as such.
  {
    Tensor p = Tensor::empty({bytes / 4}, DType::F32, Device::cpu(), MemoryCategory::Workspace);
    p.storage()->recharge(MemoryCategory::TrainableParameter);
  }
  CHECK(memory::cpu_allocator_stats().cached_bytes == before.cached_bytes + int64_t(size_t(4) << 20));
}

namespace {

// The VmFlags line of the mapping of /proc/self/smaps that holds address p ("" when none is found).
std::string vm_flags_of(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  const auto at = reinterpret_cast<uintptr_t>(p);
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {  // a mapping's first line: lo-hi perms ...
      inside = lo <= at && at < hi;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return line;
    }
  }
  return "";
}

}  // namespace

TEST_CASE("allocator: blocks of 4 MiB and more are advised onto transparent huge pages, smaller ones are not",
          "[memory][allocator]") {
  // Whether this kernel (and any sandbox around the process) takes the advice at all: a probe mapping of our
  // own, advised directly. Where it does not, the allocator's advice is a no-op and there is nothing to check.
  {
    const size_t bytes = size_t(4) << 20;
    void* probe = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(probe != MAP_FAILED);
    const bool advised =
        madvise(probe, bytes, MADV_HUGEPAGE) == 0 && vm_flags_of(probe).find(" hg") != std::string::npos;
    munmap(probe, bytes);
    if (!advised) {
      WARN("madvise(MADV_HUGEPAGE) is refused or not shown here: nothing to check");
      return;
    }
  }
  const char* setting = std::getenv("LORA_CPU_HUGEPAGES");
  const bool enabled = setting == nullptr || std::string(setting) != "0";
  Tensor large = Tensor::zeros({int64_t(3) << 20});  // 12 MiB
  Tensor small = Tensor::zeros({int64_t(1) << 18});  // 1 MiB: mapped, not advised
  const std::string large_flags = vm_flags_of(large.data<float>()), small_flags = vm_flags_of(small.data<float>());
  INFO("large: " << large_flags << "\nsmall: " << small_flags
                 << "\nLORA_CPU_HUGEPAGES: " << (setting ? setting : "unset"));
  REQUIRE(!large_flags.empty());
  CHECK((large_flags.find(" hg") != std::string::npos) == enabled);  // hg: MADV_HUGEPAGE; LORA_CPU_HUGEPAGES=0: none
  CHECK(small_flags.find(" hg") == std::string::npos);
}

TEST_CASE("allocator: trim_cache gives the cache back and a limit of 0 turns it off", "[memory][allocator]") {
  { Tensor a = Tensor::zeros({300000}); }
  CHECK(memory::cpu_allocator_stats().cached_bytes > 0);
  CHECK(memory::trim_cache() > 0);
  CHECK(memory::cpu_allocator_stats().cached_bytes == 0);
  CHECK(memory::cpu_allocator_stats().cached_blocks == 0);

  memory::set_cache_limit(0);
  const memory::CpuAllocatorStats before = memory::cpu_allocator_stats();
  { Tensor a = Tensor::zeros({300000}); }
  { Tensor b = Tensor::zeros({300000}); }
  const memory::CpuAllocatorStats after = memory::cpu_allocator_stats();
  CHECK(after.cache_limit == 0);
  CHECK(after.cached_bytes == 0);
  CHECK(after.system_allocations - before.system_allocations == 2);
  CHECK(after.system_frees - before.system_frees == 2);
  memory::set_growing_cache_limit();
  const memory::CpuAllocatorStats reset = memory::cpu_allocator_stats();
  CHECK(reset.cache_limit ==
        std::max(int64_t(memory::kDefaultCacheLimit), reset.transient_peak + reset.transient_peak / 4));
}

// A step whose transient blocks add up to more than a fixed limit gives the excess back to the system at its end
// and takes it again the next step (page faults every step); the growing limit keeps all of them.
TEST_CASE("allocator: the growing limit keeps every block of a step larger than its floor", "[memory][allocator]") {
  constexpr int kBlocks = 8;
  constexpr int64_t kFloats = int64_t(1) << 18;  // 1 MiB: a class of its own, under the one-off size
  const auto step = [&] {
    std::vector<Tensor> blocks;
    for (int i = 0; i < kBlocks; ++i) blocks.push_back(Tensor::zeros({kFloats}));
    // Whatever the process held before, the transient peak is now at least these 8 MiB.
    CHECK(memory::cpu_allocator_stats().transient_peak >= kBlocks * kFloats * 4);
  };
  const int64_t block_bytes = kFloats * 4;

  memory::set_cache_limit(size_t(block_bytes));  // fixed at one block
  memory::trim_cache();
  step();
  CHECK(memory::cpu_allocator_stats().cached_bytes == block_bytes);
  const int64_t fixed_before = memory::cpu_allocator_stats().system_allocations;
  step();  // one block comes from the cache, seven from the system again
  CHECK(memory::cpu_allocator_stats().system_allocations - fixed_before == kBlocks - 1);

  memory::set_growing_cache_limit(size_t(block_bytes));  // the same floor, growing
  memory::trim_cache();
  step();
  const memory::CpuAllocatorStats first = memory::cpu_allocator_stats();
  CHECK(first.cached_bytes == kBlocks * block_bytes);
  CHECK(first.cache_limit == first.transient_peak + first.transient_peak / 4);
  step();  // every block from the cache
  CHECK(memory::cpu_allocator_stats().system_allocations == first.system_allocations);
  CHECK(memory::cpu_allocator_stats().cached_bytes == kBlocks * block_bytes);

  memory::set_growing_cache_limit();
  memory::trim_cache();
}

// Tensors per steady-state decode step of the serving engine at batch 1 (GPT-2, f32, the base model):
// kDecodeTensorsPerLayer for each layer and kDecodeTensorsFixed around them (docs/memory.md). They are carved
// from the engine's step arena, so a steady step asks the allocator for nothing. A change to the decode path
// that makes more tensors, or fewer, or that lets one escape the arena, shows here.
constexpr int64_t kDecodeTensorsPerLayer = 12, kDecodeTensorsFixed = 9;

namespace {

struct DecodeStepCounts {
  int64_t tensors = 0;      // carved from the engine's arena
  int64_t allocations = 0;  // asked of the allocator
};

// Decodes one request at batch 1 on a tiny GPT-2 of n_layer layers; returns the counts of each steady-state
// step, and checks that none of them went to the system.
std::vector<DecodeStepCounts> decode_step_counts(int64_t n_layer, double temperature) {
  models::ModelConfig config = models::read_config_arg("tiny");
  config.json["n_layer"] = n_layer;
  auto model = models::create_model(config, 7);
  serve::AdapterSet set(*model, 1);
  serve::DecodeEngine engine(*model, set, {.max_sequences = 1, .max_queue = 1, .capacity = 48});
  serve::Request r;
  r.prompt = {1, 2, 3, 4, 5, 6, 7, 8};
  r.options.max_tokens = 32;
  r.options.temperature = temperature;
  r.options.stop_at_eos = false;
  engine.submit(r);
  REQUIRE(engine.step());  // the prompt and the first decode step: the arena learns the step's size
  REQUIRE(engine.step());  // the arena's buffer is made
  CHECK(engine.step_arena().stats().replacements == 1);
  std::vector<DecodeStepCounts> counts;
  for (int i = 0; i < 16; ++i) {
    const memory::CpuAllocatorStats before = memory::cpu_allocator_stats();
    const StepArena::Stats arena_before = engine.step_arena().stats();
    REQUIRE(engine.step());
    const memory::CpuAllocatorStats after = memory::cpu_allocator_stats();
    const StepArena::Stats arena_after = engine.step_arena().stats();
    counts.push_back({arena_after.carved - arena_before.carved, after.allocations - before.allocations});
    CHECK(after.system_allocations == before.system_allocations);
    CHECK(arena_after.overflowed == arena_before.overflowed);
  }
  CHECK(engine.step_arena().stats().replacements == 1);  // sized once: the position's growth fits
  return counts;
}

}  // namespace

TEST_CASE("allocator: a steady-state decode step allocates nothing and carves the documented tensors",
          "[memory][allocator][serve][decode]") {
  for (double temperature : {0.0, 0.8}) {
    INFO("temperature " << temperature);
    const std::vector<DecodeStepCounts> two = decode_step_counts(2, temperature),
                                        three = decode_step_counts(3, temperature);
    for (size_t i = 0; i < two.size(); ++i) {
      CHECK(two[i].allocations == 0);
      CHECK(three[i].allocations == 0);
      CHECK(two[i].tensors == two[0].tensors);  // nothing grows with the position
      CHECK(three[i].tensors == three[0].tensors);
    }
    const int64_t per_layer = three[0].tensors - two[0].tensors, fixed = two[0].tensors - 2 * per_layer;
    INFO("tensors per decode step: " << per_layer << " per layer + " << fixed);
    CHECK(per_layer == kDecodeTensorsPerLayer);
    CHECK(fixed == kDecodeTensorsFixed);
  }
}
