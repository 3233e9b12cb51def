// Mixed-adapter batches (serve/adapter_set.h): one forward pass over rows that each name their own adapter
// (or none) gives, row by row, the logits of that row alone with its adapter as a LoRALinear; adapters are
// loaded and unloaded by name without changing the base weights.
#include <catch2/catch.hpp>

#include <map>

#include "backends/kernels/lora_gather.h"
#include "models/quantize_base.h"
#include "serve/adapter_set.h"
#include "tests/serve_checks.h"
#include "tests/test_helpers.h"

using namespace lora;

namespace {

std::vector<int32_t> random_tokens(int64_t T, int64_t V, Generator& gen) {
  std::vector<int32_t> ids(static_cast<size_t>(T));
  for (auto& id : ids) id = static_cast<int32_t>(gen.below(V));
  return ids;
}

// Batch rows naming adapters by index into `states` (-1: none), checked row by row against row_alone.
void check_mixed_batch(models::CausalLM& model, serve::AdapterSet& set, const std::vector<std::string>& names,
                       const std::vector<nn::AdapterState>& states, const std::vector<int>& row_adapter, int64_t T,
                       models::CausalLM& reference) {
  Generator gen(99);
  const int64_t B = static_cast<int64_t>(row_adapter.size()), V = model.dims().vocab_size;
  std::vector<int32_t> all;
  std::vector<std::vector<int32_t>> rows;
  std::vector<int32_t> slots;
  for (int a : row_adapter) {
    rows.push_back(random_tokens(T, V, gen));
    all.insert(all.end(), rows.back().begin(), rows.back().end());
    slots.push_back(a < 0 ? -1 : set.slot(names[static_cast<size_t>(a)]));
  }
  NoGradGuard no_grad;
  model.eval();
  const Tensor logits =
      model.forward(models::ForwardBatch(Tensor::from_vector(all, {B, T}, model.device())).with_adapters(slots))
          .to(Device::cpu());  // [B, T, V]
  for (int64_t b = 0; b < B; ++b) {
    INFO("row " << b << " with adapter " << row_adapter[static_cast<size_t>(b)]);
    const int a = row_adapter[static_cast<size_t>(b)];
    const Tensor expected = testing::row_alone(reference, rows[static_cast<size_t>(b)], a < 0 ? nullptr : &states[a]);
    testing::require_close(logits.view({B * T, V}).narrow_rows(b * T, T), expected, 1e-4, 1e-5);
  }
}

}  // namespace

TEST_CASE("mixed-adapter batch: each row matches that row alone with its adapter (GPT-2, Llama)", "[serve]") {
  for (const std::string preset : {"tiny", "llama-tiny"}) {
    INFO(preset);
    const models::ModelConfig config = models::read_config_arg(preset);
    auto model = models::create_model(config, 3);
    auto reference = models::create_model(config, 3);  // the same base weights
    std::map<std::string, Tensor> base;
    for (auto& [name, p] : model->named_parameters()) base[name] = p.clone();

    // Different ranks, targets (fused-projection slices, whole layers, every linear layer), and rsLoRA.
    const std::vector<testing::AdapterSpec> specs = {
        {"qv2", 2, {"q", "v"}}, {"all8", 8, {"all-linear"}}, {"k4", 4, {"k"}, true}};
    const std::vector<nn::AdapterState> states = testing::random_adapters(*reference, specs, 7);
    std::vector<std::string> names;
    for (const auto& s : specs) names.push_back(s.name);
    {
      serve::AdapterSet set(*model, 4);
      for (size_t i = 0; i < specs.size(); ++i) REQUIRE(set.load(names[i], states[i]) == static_cast<int32_t>(i));
      check_mixed_batch(*model, set, names, states, {0, -1, 1, 2, 0, 1}, 5, *reference);
      // Decode-shaped: one token per row.
      check_mixed_batch(*model, set, names, states, {2, 1, -1, 0}, 1, *reference);

      // Unload one, and another adapter takes its slot; the others are untouched.
      set.unload("all8");
      REQUIRE_FALSE(set.contains("all8"));
      REQUIRE_THROWS_WITH(set.slot("all8"), Catch::Contains("all8") && Catch::Contains("qv2"));
      REQUIRE(set.load("again", states[1]) == 1);
      check_mixed_batch(*model, set, {"qv2", "again", "k4"}, states, {1, 0, 2, -1}, 3, *reference);
    }
    // The set is gone: the plain base model, with its weights as they were.
    REQUIRE(nn::lora_layers(*model).empty());
    for (auto& [name, p] : model->named_parameters()) {
      INFO(name);
      REQUIRE(base.count(name) == 1);
      testing::require_close(p, base.at(name), 0.0, 0.0);
    }
  }
}

TEST_CASE("mixed-adapter batch on a quantized base: each row matches that row alone with its adapter", "[serve]") {
  for (const QuantFormat format : {QuantFormat::Q8_0, QuantFormat::Q4_0, QuantFormat::NF4}) {
    INFO(quant_format_name(format));
    const models::ModelConfig config = models::read_config_arg("llama-tiny");
    auto model = models::create_model(config, 3);
    auto reference = models::create_model(config, 3);  // the same weights, quantized the same way
    for (auto* m : {model.get(), reference.get()}) {
      m->freeze();
      REQUIRE(models::quantize_base(*m, format, /*inference_head=*/true).layers > 0);
    }
    const std::vector<testing::AdapterSpec> specs = {{"qv2", 2, {"q", "v"}}, {"all8", 8, {"all-linear"}}};
    const std::vector<nn::AdapterState> states = testing::random_adapters(*reference, specs, 7);
    serve::AdapterSet set(*model, 2);
    for (size_t i = 0; i < specs.size(); ++i) REQUIRE(set.load(specs[i].name, states[i]) == static_cast<int32_t>(i));
    check_mixed_batch(*model, set, {"qv2", "all8"}, states, {1, -1, 0, 1}, 4, *reference);
    check_mixed_batch(*model, set, {"qv2", "all8"}, states, {0, 1, -1}, 1, *reference);
  }
}

TEST_CASE("mixed-adapter batch: refusals name what was wrong and leave the set as it was", "[serve]") {
  const models::ModelConfig config = models::read_config_arg("tiny");
  auto model = models::create_model(config, 3);
  auto reference = models::create_model(config, 3);
  const std::vector<nn::AdapterState> states = testing::random_adapters(*reference, {{"a", 2, {"q"}}}, 5);
  serve::AdapterSet set(*model, 2);
  set.load("a", states[0]);
  REQUIRE_THROWS_WITH(set.load("a", states[0]), Catch::Contains("'a' is already loaded"));
  REQUIRE_THROWS_WITH(set.load("", states[0]), Catch::Contains("needs a name"));
  REQUIRE_THROWS_WITH(set.unload("nope"), Catch::Contains("no adapter named 'nope'"));

  // An adapter for another model size is refused by the PEFT reader's checks; "a" still works.
  nlohmann::json wide = config.json;
  wide["n_embd"] = wide["n_embd"].get<int64_t>() * 2;
  auto other = models::create_model({wide, "wide"}, 1);
  const std::vector<nn::AdapterState> foreign = testing::random_adapters(*other, {{"w", 2, {"q"}}}, 6);
  REQUIRE_THROWS_WITH(set.load("w", foreign[0]), Catch::Contains("adapter 'w'"));
  REQUIRE_FALSE(set.contains("w"));
  set.load("b", states[0]);
  REQUIRE_THROWS_WITH(set.load("c", states[0]), Catch::Contains("all 2 slots are taken"));
  REQUIRE_THROWS_WITH(
      model->forward(
          models::ForwardBatch(Tensor::from_vector(std::vector<int32_t>{1, 2}, {2, 1})).with_adapters({0, 2})),
      Catch::Contains("slot 2"));
  check_mixed_batch(*model, set, {"a"}, states, {0, -1}, 4, *reference);
}

TEST_CASE("lora_gather: each row gathers its adapter's pieces, in double precision", "[serve]") {
  // Two slots on a layer of 5 inputs and 6 outputs: slot 0 one piece of rank 2 on outputs [0, 6); slot 1
  // two pieces of rank 1 on outputs [0, 2) and [4, 6). Checked against the formula written out.
  Generator gen(4);
  const int64_t N = 4, in = 5, out = 6;
  const Tensor x = Tensor::randn({N, in}, gen, 0.0, 1.0, DType::F64);
  const Tensor a = Tensor::randn({4, in}, gen, 0.0, 1.0, DType::F64);  // rows: slot 0 (2), slot 1 (1 + 1)
  const Tensor b = Tensor::randn({16}, gen, 0.0, 1.0, DType::F64);     // 6 x 2, then 2 x 1, 2 x 1
  const Tensor slot_pieces = Tensor::from_vector(std::vector<int64_t>{0, 1, 3}, {3});
  const Tensor pieces =
      Tensor::from_vector(std::vector<int64_t>{0, 2, 0, 0, 6, 2, 1, 12, 0, 2, 3, 1, 14, 4, 2}, {3, 5});
  const Tensor scales = Tensor::from_vector(std::vector<double>{0.5, 2.0, -1.0}, {3});
  const Tensor token_slot = Tensor::from_vector(std::vector<int32_t>{1, -1, 0, 1}, {N});
  Tensor y = Tensor::zeros({N, out}, DType::F64);
  kernels::run<kernels::LoraGather>(Device::cpu(), x, token_slot, slot_pieces, pieces, scales, a, b, y);

  const std::vector<double> X = x.to_vector<double>(), A = a.to_vector<double>(), Bv = b.to_vector<double>();
  auto dot_a = [&](int64_t row, int64_t i) {
    double s = 0;
    for (int64_t c = 0; c < in; ++c) s += A[row * in + c] * X[i * in + c];
    return s;
  };
  std::vector<double> expected(static_cast<size_t>(N * out), 0.0);
  for (int64_t i : {0, 3}) {  // slot 1
    for (int64_t o = 0; o < 2; ++o) expected[i * out + o] += 2.0 * Bv[12 + o] * dot_a(2, i);
    for (int64_t o = 0; o < 2; ++o) expected[i * out + 4 + o] += -1.0 * Bv[14 + o] * dot_a(3, i);
  }
  for (int64_t o = 0; o < out; ++o) {  // row 2, slot 0
    expected[2 * out + o] += 0.5 * (Bv[o * 2] * dot_a(0, 2) + Bv[o * 2 + 1] * dot_a(1, 2));
  }
  testing::require_close(y, expected, 1e-12, 1e-12);

  // A piece outside the packed buffers, and a row naming a slot that does not exist, are refused.
  const Tensor bad = Tensor::from_vector(std::vector<int64_t>{0, 2, 0, 0, 7, 2, 1, 12, 0, 2, 3, 1, 14, 4, 2}, {3, 5});
  REQUIRE_THROWS_WITH(
      kernels::run<kernels::LoraGather>(Device::cpu(), x, token_slot, slot_pieces, bad, scales, a, b, y),
      Catch::Contains("piece 0"));
  const Tensor bad_slot = Tensor::from_vector(std::vector<int32_t>{1, -1, 2, 1}, {N});
  REQUIRE_THROWS_WITH(
      kernels::run<kernels::LoraGather>(Device::cpu(), x, bad_slot, slot_pieces, pieces, scales, a, b, y),
      Catch::Contains("slot 2"));
}

#if defined(LORA_HAVE_CUDA)
#include "backends/cuda/cuda_device.h"
#include "serve/decode_engine.h"

TEST_CASE("cuda: a mixed-adapter batch gives the CPU's logits, and batched decoding its greedy tokens",
          "[serve][cuda]") {
  if (!cuda_device_available()) {
    WARN("no CUDA device: skipped");
    return;
  }
  const Device cuda = Device::cuda(0);
  for (const std::string preset : {"tiny", "llama-tiny"}) {
    INFO(preset);
    const models::ModelConfig config = models::read_config_arg(preset);
    auto cpu_model = models::create_model(config, 3);
    auto gpu_model = models::create_model(config, 3);
    gpu_model->to(cuda);
    auto reference = models::create_model(config, 3);
    const std::vector<nn::AdapterState> states =
        testing::random_adapters(*reference, {{"qv2", 2, {"q", "v"}}, {"all8", 8, {"all-linear"}}}, 7);
    serve::AdapterSet cpu_set(*cpu_model, 4), gpu_set(*gpu_model, 4);
    for (size_t i = 0; i < states.size(); ++i) {
      cpu_set.load(std::to_string(i), states[i]);
      gpu_set.load(std::to_string(i), states[i]);
    }
    Generator gen(12);
    const int64_t B = 4, T = 5, V = cpu_model->dims().vocab_size;
    std::vector<int32_t> ids;
    for (int64_t i = 0; i < B * T; ++i) ids.push_back(static_cast<int32_t>(gen.below(V)));
    NoGradGuard no_grad;
    cpu_model->eval();
    gpu_model->eval();
    const std::vector<int32_t> rows = {1, -1, 0, 1};
    const Tensor expected =
        cpu_model->forward(models::ForwardBatch(Tensor::from_vector(ids, {B, T})).with_adapters(rows));
    const Tensor got =
        gpu_model->forward(models::ForwardBatch(Tensor::from_vector(ids, {B, T}, cuda)).with_adapters(rows))
            .to(Device::cpu());
    testing::require_close(got, expected, 1e-3, 1e-4);

    // Continuous batching over the KV pool on the GPU: greedy tokens as on the CPU.
    auto decode = [&](models::CausalLM& m, serve::AdapterSet& set) {
      serve::DecodeEngine engine(m, set, {.max_sequences = 2, .max_queue = 8, .capacity = 32});
      std::map<int64_t, std::vector<int32_t>> out;
      for (int i = 0; i < 4; ++i) {
        serve::Request r;
        r.prompt = {static_cast<int32_t>(i + 1), 5, 9};
        r.adapter = i == 0 ? "" : std::to_string(i % 2);
        r.options.max_tokens = 4 + 2 * i;
        r.options.temperature = 0;
        r.options.stop_at_eos = false;
        r.on_event = [&out](const serve::Event& e) {
          if (e.token >= 0) out[e.id].push_back(e.token);
        };
        engine.submit(std::move(r));
      }
      while (engine.step()) {
      }
      return out;
    };
    REQUIRE(decode(*gpu_model, gpu_set) == decode(*cpu_model, cpu_set));
  }
}
#endif
