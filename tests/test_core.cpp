// Tests of core/: tensors (factories, views, element access, devices) and memory accounting.
#include <catch2/catch.hpp>

#include "core/memory.h"
#include "core/tensor.h"
#include "tests/test_helpers.h"

using namespace lora;

TEST_CASE("tensor factories fill shapes and values", "[core]") {
  Tensor z = Tensor::zeros({2, 3});
  REQUIRE(z.shape() == Shape{2, 3});
  REQUIRE(z.numel() == 6);
  REQUIRE(z.dtype() == DType::F32);
  REQUIRE(z.device() == Device::cpu());
  for (float v : z.to_vector<float>()) REQUIRE(v == 0.0f);

  REQUIRE(Tensor::ones({4}).to_vector<float>() == std::vector<float>{1, 1, 1, 1});
  REQUIRE(Tensor::full({2}, 2.5, DType::F64).to_vector<double>() == std::vector<double>{2.5, 2.5});
  REQUIRE(Tensor::arange(4, DType::I64).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 3});

  Tensor v = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  REQUIRE(v.at({1, 2}) == 6.0);
  v.set({0, 1}, 7.0);
  REQUIRE(v.at({0, 1}) == 7.0);
  REQUIRE_THROWS_AS(v.at({2, 0}), Error);
  REQUIRE_THROWS_AS(Tensor::from_vector<float>({1, 2, 3}, {2, 2}), Error);
  REQUIRE_THROWS_AS(Tensor::zeros({2, -1}), Error);
}

TEST_CASE("tensor storage is 64-byte aligned", "[core]") {
  for (int n : {1, 3, 17, 1000}) {
    Tensor t = Tensor::empty({n});
    REQUIRE(reinterpret_cast<uintptr_t>(t.raw_data()) % 64 == 0);
  }
}

TEST_CASE("random tensors are reproducible from the seed", "[core]") {
  Generator g1(42), g2(42), g3(43);
  Tensor a = Tensor::randn({100}, g1), b = Tensor::randn({100}, g2), c = Tensor::randn({100}, g3);
  REQUIRE(a.to_vector<float>() == b.to_vector<float>());
  REQUIRE(a.to_vector<float>() != c.to_vector<float>());
  Generator g4(7);
  Tensor big = Tensor::randn({20000}, g4, 1.0, 2.0, DType::F64);
  double mean = 0, var = 0;
  for (double x : big.to_vector<double>()) mean += x;
  mean /= 20000;
  for (double x : big.to_vector<double>()) var += (x - mean) * (x - mean);
  var /= 20000;
  REQUIRE(std::abs(mean - 1.0) < 0.05);
  REQUIRE(std::abs(std::sqrt(var) - 2.0) < 0.05);
  Tensor u = Tensor::uniform({1000}, g4, -3.0, -2.0);
  for (float x : u.to_vector<float>()) REQUIRE((x >= -3.0f && x < -2.0f));
}

TEST_CASE("view and narrow_rows share storage - clone copies", "[core]") {
  Tensor t = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor v = t.view({3, -1});
  REQUIRE(v.shape() == Shape{3, 2});
  REQUIRE(v.storage() == t.storage());
  v.set({2, 1}, 50);
  REQUIRE(t.at({1, 2}) == 50);
  Tensor row = t.narrow_rows(1, 1);
  REQUIRE(row.shape() == Shape{1, 3});
  REQUIRE(row.at({0, 0}) == 3);
  Tensor c = t.clone();
  c.set({0, 0}, 9);
  REQUIRE(t.at({0, 0}) == 0);
  REQUIRE_THROWS_AS(t.view({4, 2}), Error);
  REQUIRE_THROWS_AS(t.view({-1, -1}), Error);
  REQUIRE_THROWS_AS(t.narrow_rows(1, 2), Error);
}

TEST_CASE("dtype conversion and printing", "[core]") {
  Tensor t = Tensor::from_vector<double>({1.5, -2.5}, {2});
  REQUIRE(t.to(DType::F32).to_vector<float>() == std::vector<float>{1.5f, -2.5f});
  REQUIRE(t.to(DType::I64).to_vector<int64_t>() == std::vector<int64_t>{1, -2});
  REQUIRE(fmt::format("{}", t) == "Tensor[2] float64 cpu [1.5, -2.5]");
  REQUIRE_THROWS_WITH(t.data<float>(), Catch::Contains("holds float64"));
}

TEST_CASE("shape broadcasting and axis errors", "[core]") {
  REQUIRE(broadcast_shapes({4, 1, 3}, {5, 1}, "op") == Shape{4, 5, 3});
  REQUIRE(broadcast_shapes({3}, {2, 3}, "op") == Shape{2, 3});
  REQUIRE_THROWS_WITH(broadcast_shapes({2, 3}, {4}, "add"),
                      Catch::Contains("add") && Catch::Contains("[2, 3]") && Catch::Contains("[4]"));
  REQUIRE_THROWS_AS(Shape({2, 3}).normalize_axis(2), Error);
  REQUIRE(Shape({2, 3}).normalize_axis(-1) == 1);
}

TEST_CASE("devices parse and unavailable devices give a clear error", "[core]") {
  REQUIRE(Device::parse("cpu") == Device::cpu());
  REQUIRE(Device::parse("cuda:1") == Device::cuda(1));
  REQUIRE_THROWS_AS(Device::parse("gpu"), Error);
  REQUIRE_THROWS_AS(Device::parse("cuda:x"), Error);
  // Out of int's range, signs, spaces and trailing text are refused with lora::Error, not std::out_of_range.
  for (const char* bad :
       {"cuda:99999999999999999999", "cuda:-1", "cuda:+1", "cuda: 1", "cuda:1 ", "cuda:", "cuda:0x1"}) {
    REQUIRE_THROWS_WITH(Device::parse(bad), Catch::Contains("expected cpu, cuda, cuda:N"));
  }
}

// ---------------------------------------------------------------------------------------------------
// Memory accounting

namespace {
int64_t live(MemoryCategory c) {
  return MemoryTracker::instance().live(c);
}
int64_t peak(MemoryCategory c) {
  return MemoryTracker::instance().peak(c);
}
}  // namespace

TEST_CASE("memory tracker: exact live and peak figures for a sequence of allocations", "[core][memory]") {
  auto& tracker = MemoryTracker::instance();
  tracker.reset_peaks();
  const DeviceMemoryStats before = tracker.stats();
  const int64_t base_total = before.live.total();
  const int64_t base_opt = live(MemoryCategory::OptimizerState);
  {
    MemoryCategoryGuard guard(MemoryCategory::OptimizerState);
    Tensor a = Tensor::empty({100});  // 400 bytes
    REQUIRE(live(MemoryCategory::OptimizerState) == base_opt + 400);
    {
      Tensor b = Tensor::empty({50}, DType::F64);  // 400 bytes
      REQUIRE(live(MemoryCategory::OptimizerState) == base_opt + 800);
    }
    REQUIRE(live(MemoryCategory::OptimizerState) == base_opt + 400);
    Tensor c = Tensor::empty({25});  // 100 bytes
    REQUIRE(live(MemoryCategory::OptimizerState) == base_opt + 500);
    REQUIRE(peak(MemoryCategory::OptimizerState) == base_opt + 800);
    // A nested guard charges its own category, and the outer one applies again after it.
    const int64_t grad0 = live(MemoryCategory::Gradient);
    {
      MemoryCategoryGuard inner(MemoryCategory::Gradient);
      Tensor g = Tensor::empty({10});
      REQUIRE(live(MemoryCategory::Gradient) == grad0 + 40);
    }
    REQUIRE(MemoryCategoryGuard::current() == MemoryCategory::OptimizerState);
  }
  REQUIRE(live(MemoryCategory::OptimizerState) == base_opt);
  const DeviceMemoryStats after = tracker.stats();
  REQUIRE(after.live.total() == base_total);
  REQUIRE(after.global_peak == base_total + 800);
  REQUIRE(after.live_at_peak[MemoryCategory::OptimizerState] == base_opt + 800);

  tracker.reset_peaks();
  REQUIRE(peak(MemoryCategory::OptimizerState) == base_opt);
  REQUIRE(tracker.stats().global_peak == base_total);
}

TEST_CASE("memory tracker: a tensor recharged to another category moves its bytes", "[core][memory]") {
  const int64_t trainable0 = live(MemoryCategory::TrainableParameter);
  const int64_t frozen0 = live(MemoryCategory::FrozenParameter);
  Tensor w = Tensor::empty({8, 8}, DType::F32, Device::cpu(), MemoryCategory::TrainableParameter);
  REQUIRE(live(MemoryCategory::TrainableParameter) == trainable0 + 256);
  w.storage()->recharge(MemoryCategory::FrozenParameter);  // the parameter is frozen after creation
  REQUIRE(live(MemoryCategory::TrainableParameter) == trainable0);
  REQUIRE(live(MemoryCategory::FrozenParameter) == frozen0 + 256);
  w = Tensor();  // released to the category it is in now
  REQUIRE(live(MemoryCategory::FrozenParameter) == frozen0);
  REQUIRE(live(MemoryCategory::TrainableParameter) == trainable0);
}
