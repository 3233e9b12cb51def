// The meta device: tensors with shapes and no data, charged to the MemoryTracker; every kernel skipped; a
// model's forward and backward on meta charge byte for byte what the same run charges on the CPU.
#include <catch2/catch.hpp>

#include "autograd/ops.h"
#include "autograd/ops/linear_cross_entropy.h"
#include "backends/backend.h"
#include "models/gpt2/model.h"

using namespace lora;

namespace {

const Device kMeta = Device::meta();

int64_t live(MemoryCategory c, Device d) {
  return MemoryTracker::instance().live(c, d);
}

}  // namespace

TEST_CASE("meta: the device parses, prints and compares", "[meta]") {
  REQUIRE(Device::parse("meta") == kMeta);
  REQUIRE(kMeta.str() == "meta");
  REQUIRE(kMeta.is_meta());
  REQUIRE_FALSE(kMeta.is_cpu());
  REQUIRE_FALSE(Device::cpu().is_meta());
  REQUIRE_THROWS_WITH(Device::parse("metal"), Catch::Contains("meta"));
}

TEST_CASE("meta: factories charge the tracker and hold no memory", "[meta][memory]") {
  const int64_t ws0 = live(MemoryCategory::Workspace, kMeta);
  const int64_t cpu0 = MemoryTracker::instance().stats(Device::cpu()).live.total();
  Generator gen(1);
  {
    std::vector<Tensor> ts = {Tensor::empty({10, 10}, DType::F32, kMeta),
                              Tensor::zeros({10, 10}, DType::F32, kMeta),
                              Tensor::ones({10, 10}, DType::F32, kMeta),
                              Tensor::full({10, 10}, 2.0, DType::F32, kMeta),
                              Tensor::randn({10, 10}, gen, 0, 1, DType::F32, kMeta),
                              Tensor::uniform({10, 10}, gen, 0, 1, DType::F32, kMeta),
                              Tensor::from_vector(std::vector<float>(100, 1.f), {10, 10}, kMeta),
                              Tensor::arange(100, DType::F32, kMeta)};
    for (const Tensor& t : ts) {
      CHECK(t.device() == kMeta);
      CHECK(t.storage()->data() == nullptr);
      CHECK(t.numel() == 100);
    }
    CHECK(live(MemoryCategory::Workspace, kMeta) == ws0 + 8 * 400);
    CHECK(MemoryTracker::instance().stats(Device::cpu()).live.total() == cpu0);  // nothing drawn on the host
  }
  CHECK(live(MemoryCategory::Workspace, kMeta) == ws0);
  REQUIRE_THROWS_WITH(Tensor::from_vector(std::vector<float>(3, 1.f), {10, 10}, kMeta), Catch::Contains("from_vector"));
}

TEST_CASE("meta: .to(meta), copies into meta and recharging work as on the CPU", "[meta][memory]") {
  const int64_t tp0 = live(MemoryCategory::TrainableParameter, kMeta),
                fp0 = live(MemoryCategory::FrozenParameter, kMeta);
  Tensor host = Tensor::empty({3, 5}, DType::F64, Device::cpu(), MemoryCategory::TrainableParameter);
  Tensor m = host.to(kMeta);  // keeps the category
  CHECK(m.device() == kMeta);
  CHECK(m.dtype() == DType::F64);
  CHECK(live(MemoryCategory::TrainableParameter, kMeta) == tp0 + 120);
  m.copy_from(host);  // no data work
  m.zero_();
  CHECK(m.clone().device() == kMeta);
  CHECK(m.to(DType::F32).dtype() == DType::F32);
  m.storage()->recharge(MemoryCategory::FrozenParameter);
  CHECK(live(MemoryCategory::TrainableParameter, kMeta) == tp0);
  CHECK(live(MemoryCategory::FrozenParameter, kMeta) == fp0 + 120);
  m = Tensor();
  CHECK(live(MemoryCategory::FrozenParameter, kMeta) == fp0);
}

TEST_CASE("meta: reading data is a lora::Error that says the tensor has none", "[meta]") {
  Tensor m = Tensor::ones({2, 3}, DType::F32, kMeta);
  m.set_name("w");
  const std::string no_data = "is on the meta device and has no data";
  REQUIRE_THROWS_WITH(m.data<float>(), Catch::Contains(no_data) && Catch::Contains("'w'"));
  REQUIRE_THROWS_WITH(m.raw_data(), Catch::Contains(no_data));
  REQUIRE_THROWS_WITH(m.to_vector<float>(), Catch::Contains(no_data));
  REQUIRE_THROWS_WITH(m.at({0, 0}), Catch::Contains(no_data));
  REQUIRE_THROWS_WITH(Tensor::ones({1}, DType::F32, kMeta).item(), Catch::Contains(no_data));
  REQUIRE_THROWS_WITH(m.to(Device::cpu()), Catch::Contains(no_data) && Catch::Contains("cpu"));
  Tensor host = Tensor::zeros({2, 3});
  REQUIRE_THROWS_WITH(host.copy_from(m), Catch::Contains(no_data));
  REQUIRE(m.str() == "Tensor[2, 3] float32 meta");
}

TEST_CASE("meta: every backend primitive and fused op runs on shapes alone", "[meta]") {
  Generator gen(2);
  Backend& be = backend_for(kMeta);
  Tensor a = Tensor::randn({4, 6}, gen, 0, 1, DType::F32, kMeta), b = Tensor::randn({6}, gen, 0, 1, DType::F32, kMeta);
  Tensor out = Tensor::empty({4, 6}, DType::F32, kMeta);
  be.binary(BinaryOp::Add, a, b, out);
  be.unary(UnaryOp::Gelu, a, out);
  be.fill(out, 1.0);
  CHECK(be.sum_squares(a) == 0.0);
  a.set_requires_grad(true);
  Tensor w = Tensor::ones({6}, DType::F32, kMeta).set_requires_grad(true);
  Tensor h = ops::layer_norm(ops::gelu(a) * 2.0, w, Tensor::zeros({6}, DType::F32, kMeta));
  Tensor att = ops::causal_attention(ops::reshape(h, {1, 2, 2, 6}), ops::reshape(h, {1, 2, 2, 6}),
                                     ops::reshape(h, {1, 2, 2, 6}));
  Tensor logits = ops::linear(ops::reshape(att, {4, 6}), Tensor::randn({9, 6}, gen, 0, 1, DType::F32, kMeta));
  // cross_entropy counts the rows that count on the host: on meta, every row.
  Tensor targets = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, -100}, {4}, kMeta);
  Tensor loss = ops::cross_entropy(ops::softmax(logits), targets) +
                ops::linear_cross_entropy(h, Tensor::ones({9, 6}, DType::F32, kMeta), targets);
  CHECK(loss.device() == kMeta);
  CHECK(loss.shape() == Shape{});
  backward(loss);
  CHECK(a.grad().device() == kMeta);
  CHECK(a.grad().shape() == a.shape());
  CHECK(w.grad().shape() == w.shape());
}

// The memory a training step needs, predicted without allocating it: the same tiny GPT-2 step on the CPU and
// on meta charges the same bytes to each category.
TEST_CASE("meta: a GPT-2 step charges exactly what it charges on the CPU", "[meta][memory]") {
  autograd::Tape::current().clear();
  const Device cpu = Device::cpu();
  const int64_t tp_cpu0 = live(MemoryCategory::TrainableParameter, cpu);
  gpt2::GPT2LMHeadModel model(gpt2::GPT2Config::preset("tiny"), 3);
  const int64_t params_bytes = live(MemoryCategory::TrainableParameter, cpu) - tp_cpu0;
  REQUIRE(params_bytes > 0);

  Generator gen(4);
  const int64_t B = 2, T = 16, V = model.config().vocab_size;
  std::vector<int64_t> ids(B * T), targets(B * T);
  for (auto& v : ids) v = static_cast<int64_t>(gen.below(V));
  for (auto& v : targets) v = static_cast<int64_t>(gen.below(V));

  struct Figures {
    int64_t activations, gradients;
  };
  const auto step = [&](Device device) {
    const int64_t act0 = live(MemoryCategory::Activation, device), grad0 = live(MemoryCategory::Gradient, device);
    Tensor loss = model.loss(Tensor::from_vector(ids, {B, T}, device), Tensor::from_vector(targets, {B, T}, device));
    Figures f{live(MemoryCategory::Activation, device) - act0, 0};
    backward(loss);
    f.gradients = live(MemoryCategory::Gradient, device) - grad0;
    CHECK(live(MemoryCategory::Activation, device) == act0);  // the tape let go of everything
    for (Tensor& p : model.parameters()) p.set_grad(Tensor());
    return f;
  };

  const Figures on_cpu = step(cpu);
  REQUIRE(on_cpu.activations > 0);
  REQUIRE(on_cpu.gradients == params_bytes);  // every parameter trains

  const int64_t tp_meta0 = live(MemoryCategory::TrainableParameter, kMeta);
  model.to(kMeta);
  CHECK(live(MemoryCategory::TrainableParameter, kMeta) - tp_meta0 == params_bytes);
  CHECK(live(MemoryCategory::TrainableParameter, cpu) == tp_cpu0);  // the CPU copies are gone
  const Figures on_meta = step(kMeta);
  CHECK(on_meta.activations == on_cpu.activations);
  CHECK(on_meta.gradients == on_cpu.gradients);
}
