// LoRA: exactness at initialisation, merge/unmerge, task switching, counts, gradients and memory,
// adapters in PEFT's format, and end-to-end training on a small GPT-2.
#include <catch2/catch.hpp>

#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "models/gpt2/model.h"
#include "models/lora.h"
#include "models/registry.h"
#include "nn/lora/adapter.h"
#include "optim/adam.h"
#include "tests/op_cases.h"
#include "tests/test_helpers.h"

using namespace lora;
using namespace lora::nn;
using gpt2::GPT2Config;
using GPT2 = gpt2::GPT2LMHeadModel;
using models::apply_lora;

namespace {
const std::string kFixtureDir = std::string(LORA_TEST_DATA_DIR) + "/gpt2_tiny";

Tensor random_ids(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  Generator gen(seed);
  std::vector<int32_t> ids(static_cast<size_t>(B * T));
  for (auto& id : ids) id = static_cast<int32_t>(gen.below(V));
  return Tensor::from_vector(ids, {B, T});
}

// Gives every LoRA B random values, so the adapters change the output (B starts at zero).
void randomize_adapters(Module& model, uint64_t seed) {
  Generator gen(seed);
  NoGradGuard no_grad;
  for (auto& [path, layer] : lora_layers(model)) {
    layer->lora_B.copy_from(Tensor::randn(layer->lora_B.shape(), gen, 0.0, 0.05));
  }
}

std::string temp_dir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("lora_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  return dir.string();
}
}  // namespace

TEST_CASE("LoRALinear equals its base layer exactly before training", "[lora]") {
  Generator gen(1);
  auto base = std::make_shared<Linear>(16, 12, true, gen);
  const Tensor x = Tensor::randn({3, 5, 16}, gen);
  const Tensor before = base->forward(x);
  for (bool sliced : {false, true}) {
    LoRAOptions o;
    o.rank = 4;
    LoRALinear layer(base, o, sliced ? std::vector<OutputSlice>{{0, 4}, {8, 4}} : std::vector<OutputSlice>{});
    REQUIRE(layer.forward(x).to_vector<float>() == before.to_vector<float>());  // bit for bit
    REQUIRE_FALSE(base->weight.requires_grad());
    REQUIRE(layer.lora_A.requires_grad());
  }
}

TEST_CASE("LoRA scaling: alpha / r, or alpha / sqrt(r) for rsLoRA", "[lora]") {
  LoRAOptions o;
  o.rank = 16, o.alpha = 32;
  REQUIRE(o.scaling() == 2.0);
  o.rslora = true;
  REQUIRE(o.scaling() == 8.0);
  o.rank = 0;
  REQUIRE_THROWS_AS(o.validate(), Error);
}

TEST_CASE("LoRALinear forward is base(x) + s (x A^T) B^T on the adapted slices", "[lora]") {
  Generator gen(2);
  auto base = std::make_shared<Linear>(6, 9, true, gen);
  LoRAOptions o;
  o.rank = 2, o.alpha = 3;
  LoRALinear layer(base, o, {{0, 3}, {6, 3}});
  randomize_adapters(layer, 3);
  const Tensor x = Tensor::randn({4, 6}, gen);
  // Reference: the dense update, formed explicitly (only for this test).
  Tensor expected = base->forward(x);
  for (int s = 0; s < 2; ++s) {
    Tensor a = ops::slice(layer.lora_A, 0, 2 * s, 2 * s + 2), b = ops::slice(layer.lora_B, 0, 3 * s, 3 * s + 3);
    Tensor delta = ops::matmul(ops::matmul(x, a, false, true), b, false, true) * layer.scaling();  // [4, 3]
    expected = ops::add_columns(expected, delta, s == 0 ? 0 : 6);
  }
  testing::require_close(layer.forward(x), expected, 1e-5, 1e-6);
  // The unadapted middle slice equals the base output exactly.
  testing::require_close(ops::slice(layer.forward(x), 1, 3, 6), ops::slice(base->forward(x), 1, 3, 6), 0, 0);
}

LORA_OP_CASES(add_columns_cases) {
  using testing::Inputs;
  const auto inputs = [](Shape base, Shape delta, uint64_t seed, DType dtype) {
    return [=] {
      Generator gen(seed);
      return Inputs{testing::uniform_leaf(base, gen, dtype), testing::uniform_leaf(delta, gen, dtype)};
    };
  };
  const testing::OpFn slice = [](const Inputs& in) { return ops::add_columns(in[0], in[1], 4, -1.5); };
  const testing::OpFn all = [](const Inputs& in) { return ops::add_columns(in[0], in[1], 0); };
  testing::gradcheck_case("add_columns", "columns [4, 6) of [3, 7], scale -1.5", slice,
                          inputs({3, 7}, {3, 2}, 4, DType::F64));
  testing::gradcheck_case("add_columns", "every column of [2, 2, 5]", all, inputs({2, 2, 5}, {2, 2, 5}, 4, DType::F64));
  testing::parity_case("add_columns", "columns [4, 6) of [33, 257]", slice, inputs({33, 257}, {33, 2}, 5, DType::F32));
}

TEST_CASE("add_columns: a delta that does not fit the columns is an error", "[lora]") {
  REQUIRE_THROWS_AS(ops::add_columns(Tensor::ones({2, 4}), Tensor::ones({2, 2}), 3), Error);
}

TEST_CASE("GPT-2 small with r=8 on q and v trains exactly 294,912 parameters", "[lora]") {
  GPT2 model(GPT2Config::preset("gpt2"));
  LoRAConfig config;
  config.options.rank = 8;
  const LoRASummary s = apply_lora(model, config);
  REQUIRE(s.trainable_params == 12 * 2 * (768 * 8 + 8 * 768));
  REQUIRE(s.trainable_params == 294912);
  REQUIRE(s.all_params == 124439808 + 294912);
  REQUIRE(s.str() == "trainable params: 294,912 || all params: 124,734,720 || trainable%: 0.2364");
  REQUIRE(s.adapted_layers == 12);
  // Frozen base weights are charged to the frozen category.
  for (auto& [name, p] : model.named_parameters()) {
    INFO(name);
    const bool is_lora = name.find(".lora_") != std::string::npos;
    REQUIRE(p.requires_grad() == is_lora);
    REQUIRE(p.storage()->category() ==
            (is_lora ? MemoryCategory::TrainableParameter : MemoryCategory::FrozenParameter));
  }
}

TEST_CASE("apply_lora targets by name, pattern and layer - unknown targets are refused", "[lora]") {
  GPT2 model(GPT2Config::preset("tiny"));
  LoRAConfig config;
  config.targets = {"attn.c_proj", "h.*.mlp.c_fc"};
  config.layers = {1};
  config.options.rank = 2;
  const LoRASummary s = apply_lora(model, config);
  const auto layers = lora_layers(model);
  REQUIRE(layers.size() == 2);
  REQUIRE(layers[0].first == "transformer.h.1.attn.c_proj");
  REQUIRE(layers[1].first == "transformer.h.1.mlp.c_fc");
  REQUIRE(s.trainable_params == (2 * 48 + 48 * 2) + (2 * 48 + 192 * 2));
  GPT2 other(GPT2Config::preset("tiny"));
  config.targets = {"attn.c_nope"};
  config.layers = {};
  REQUIRE_THROWS_WITH(apply_lora(other, config), Catch::Contains("c_nope"));
  REQUIRE(LoRAConfig::parse_targets(" q, v ") == std::vector<std::string>{"q", "v"});
  REQUIRE_THROWS_AS(LoRAConfig::parse_targets(","), Error);
}

TEST_CASE("merged outputs equal unmerged outputs - merging twice never adds twice", "[lora]") {
  GPT2 model(GPT2Config::preset("tiny"), 5);
  LoRAConfig config;
  config.targets = {"q", "v", "mlp.c_fc"};
  config.options.rank = 4;
  apply_lora(model, config);
  randomize_adapters(model, 6);
  model.eval();
  NoGradGuard no_grad;
  const Tensor ids = random_ids(2, 10, 101, 7);
  const Tensor unmerged = model.forward(ids);
  const Tensor w0 = model.transformer->h->items()[0]->attn->c_attn->named_parameters()[0].second.clone();
  merge_lora(model);
  const Tensor merged = model.forward(ids);
  testing::require_close(merged, unmerged, 1e-4, 1e-5);
  merge_lora(model);  // a no-op
  testing::require_close(model.forward(ids), unmerged, 1e-4, 1e-5);
  unmerge_lora(model);
  unmerge_lora(model);  // a no-op
  const Tensor w1 = model.transformer->h->items()[0]->attn->c_attn->named_parameters()[0].second;
  testing::require_close(w1, w0, 1e-6, 1e-7);
  testing::require_close(model.forward(ids), unmerged, 1e-5, 1e-6);
  // Folding the adapters in for good: a plain model that computes the adapted function.
  merge_lora(model);
  remove_lora(model, /*keep_merged=*/true);
  REQUIRE(lora_layers(model).empty());
  REQUIRE(model.num_parameters(true) == 0);
  testing::require_close(model.forward(ids), unmerged, 1e-4, 1e-5);
}

TEST_CASE("task switching: unmerge adapter 1, merge adapter 2, base weights return", "[lora]") {
  GPT2 model(GPT2Config::preset("tiny"), 8);
  std::map<std::string, Tensor> base_weights;
  for (auto& [name, p] : model.named_parameters()) base_weights[name] = p.clone();
  LoRAConfig config;
  config.options.rank = 4;
  apply_lora(model, config);
  AdapterBank bank;
  randomize_adapters(model, 9);
  bank.add("task1", models::export_adapter(model, "tiny"));
  randomize_adapters(model, 10);
  bank.add("task2", models::export_adapter(model, "tiny"));

  NoGradGuard no_grad;
  model.eval();
  const Tensor ids = random_ids(1, 8, 101, 11);
  bank.activate(model, "task2", /*merge=*/false);
  const Tensor out2 = model.forward(ids);
  bank.activate(model, "task1", /*merge=*/false);
  const Tensor out1 = model.forward(ids);
  bank.activate(model, "task1", /*merge=*/true);
  testing::require_close(model.forward(ids), out1, 1e-4, 1e-5);
  bank.activate(model, "task2", /*merge=*/true);
  testing::require_close(model.forward(ids), out2, 1e-4, 1e-5);
  REQUIRE(bank.active() == "task2");
  remove_lora(model);  // unmerges: the base model is back
  for (auto& [name, p] : model.named_parameters()) {
    INFO(name);
    testing::require_close(p, base_weights.at(name), 1e-6, 1e-7);
  }
  REQUIRE_THROWS_WITH(bank.activate(model, "task3", false), Catch::Contains("task3") && Catch::Contains("task1"));
}

TEST_CASE("only A and B get gradients and optimizer state - base weights get no buffers", "[lora][memory]") {
  GPT2 model(GPT2Config::preset("tiny"), 12);
  LoRAConfig config;
  config.options.rank = 4;
  apply_lora(model, config);
  auto& tracker = MemoryTracker::instance();
  const int64_t grad0 = tracker.live(MemoryCategory::Gradient);
  const int64_t opt0 = tracker.live(MemoryCategory::OptimizerState);
  optim::AdamW opt(model.parameters(true), {.lr = 1e-2});
  const Tensor ids = random_ids(2, 8, 101, 13);
  Tensor loss = model.loss(ids, ids);
  backward(loss);
  opt.step();
  const int64_t lora_bytes = model.num_parameters(true) * 4;
  REQUIRE(tracker.live(MemoryCategory::Gradient) - grad0 == lora_bytes);
  REQUIRE(tracker.live(MemoryCategory::OptimizerState) - opt0 == 2 * lora_bytes);
  for (auto& [name, p] : model.named_parameters()) {
    INFO(name);
    REQUIRE(p.grad().defined() == (name.find(".lora_") != std::string::npos));
  }
}

TEST_CASE("LoRA training lowers the loss while the base weights stay bit-identical - full fine-tuning changes them",
          "[lora][slow]") {
  // A learnable stream: each token determines the next (t -> 7 t + 3 mod 101), from random starts.
  std::vector<int32_t> in_ids, target_ids;
  Generator gen(14);
  for (int b = 0; b < 4; ++b) {
    int32_t t = static_cast<int32_t>(gen.below(101));
    for (int i = 0; i < 16; ++i) {
      in_ids.push_back(t);
      t = (7 * t + 3) % 101;
      target_ids.push_back(t);
    }
  }
  const Tensor inputs = Tensor::from_vector(in_ids, {4, 16}), targets = Tensor::from_vector(target_ids, {4, 16});
  for (bool use_lora : {true, false}) {
    INFO((use_lora ? "lora" : "full"));
    GPT2 model(GPT2Config::preset("tiny"), 15);
    std::map<std::string, std::vector<float>> before;
    for (auto& [name, p] : model.named_parameters()) before[name] = p.to_vector<float>();
    if (use_lora) {
      LoRAConfig config;
      config.options.rank = 8;
      config.targets = {"q", "v", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};
      apply_lora(model, config);
    }
    // LoRA takes a larger learning rate than full fine-tuning, as usual.
    optim::AdamW opt(model.parameters(true), {.lr = use_lora ? 2e-2 : 1e-2});
    double first = 0, last = 0;
    for (int step = 0; step < 30; ++step) {
      Tensor loss = model.loss(inputs, targets);
      if (step == 0) first = loss.item();
      last = loss.item();
      backward(loss);
      opt.step();
      opt.zero_grad();
    }
    INFO("loss " << first << " -> " << last);
    REQUIRE(last < (use_lora ? 0.85 : 0.5) * first);
    size_t changed = 0;
    for (auto& [name, p] : model.named_parameters()) {
      std::string base_name = name;
      for (size_t at; (at = base_name.find(".base_layer.")) != std::string::npos;) base_name.erase(at, 11);
      auto it = before.find(base_name);
      if (it == before.end()) continue;  // a LoRA parameter
      if (p.to_vector<float>() != it->second) ++changed;
    }
    if (use_lora)
      REQUIRE(changed == 0);
    else
      REQUIRE(changed == before.size());
  }
}

TEST_CASE("adapters round-trip in PEFT's format, q,v as a block-structured c_attn adapter", "[lora]") {
  GPT2 model(GPT2Config::preset("tiny"), 16);
  LoRAConfig config;
  config.options.rank = 4;
  config.options.alpha = 8;
  apply_lora(model, config);
  randomize_adapters(model, 17);
  const std::string dir = temp_dir("adapter");
  models::save_adapter(model, dir, "tiny");

  const SafeTensorsFile file = SafeTensorsFile::open(dir + "/adapter_model.safetensors");
  const std::string a = "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight";
  const std::string b = "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight";
  REQUIRE(file.contains(a));
  REQUIRE(file.info(a).shape == (Shape{8, 48}));   // rank 2 x 4: q and v stacked
  REQUIRE(file.info(b).shape == (Shape{144, 8}));  // the whole fused output
  const Tensor B = file.load(b);
  for (int64_t row = 48; row < 96; ++row) {  // the k rows are zero
    for (int64_t c = 0; c < 8; ++c) REQUIRE(B.at({row, c}) == 0.0);
  }
  std::ifstream cfg(dir + "/adapter_config.json");
  const auto config_json = nlohmann::json::parse(cfg);
  REQUIRE(config_json["r"] == 8);
  REQUIRE(config_json["lora_alpha"] == 16.0);  // 2 x alpha: the scale 16/8 equals 8/4
  REQUIRE(config_json["fan_in_fan_out"] == true);
  REQUIRE(config_json["target_modules"].size() == 2);

  // Loaded onto a fresh base model: the same function, and the per-slice form again.
  GPT2 other(GPT2Config::preset("tiny"), 16);
  load_adapter(other, dir);
  NoGradGuard no_grad;
  const Tensor ids = random_ids(2, 6, 101, 18);
  testing::require_close(other.forward(ids), model.forward(ids), 1e-5, 1e-6);
  REQUIRE(lora_layers(other)[0].second->slices().size() == 2);
  REQUIRE(other.num_parameters(true) == model.num_parameters(true));
  std::filesystem::remove_all(dir);
}

TEST_CASE("a PEFT adapter on the whole c_attn loads and matches the dense update", "[lora]") {
  // A whole-projection adapter written as PEFT writes it (no lora.cpp metadata).
  GPT2 model(GPT2Config::preset("tiny"), 19);
  LoRAConfig config;
  config.targets = {"attn.c_attn"};
  config.options.rank = 3;
  apply_lora(model, config);
  randomize_adapters(model, 20);
  AdapterState state = models::export_adapter(model, "tiny");
  state.metadata = {{"format", "pt"}};
  GPT2 other(GPT2Config::preset("tiny"), 19);
  import_adapter(other, state);
  NoGradGuard no_grad;
  const Tensor ids = random_ids(1, 5, 101, 21);
  testing::require_close(other.forward(ids), model.forward(ids), 1e-5, 1e-6);
}

TEST_CASE("mismatched adapters are refused with a clear error", "[lora]") {
  GPT2 model(GPT2Config::preset("tiny"), 22);
  LoRAConfig config;
  config.options.rank = 4;
  apply_lora(model, config);
  const AdapterState good = models::export_adapter(model, "tiny");

  SECTION("another rank in the config") {
    AdapterState bad = good;
    auto j = nlohmann::json::parse(bad.config_json);
    j["r"] = 6;
    bad.config_json = j.dump();
    GPT2 fresh(GPT2Config::preset("tiny"));
    REQUIRE_THROWS_WITH(import_adapter(fresh, bad), Catch::Contains("lora_A") && Catch::Contains("rank 6"));
  }
  SECTION("another model size") {
    GPT2Config wide = GPT2Config::preset("tiny");
    wide.n_embd = 64;
    GPT2 fresh(wide);
    REQUIRE_THROWS_WITH(import_adapter(fresh, good), Catch::Contains("expected"));
    GPT2Config deep = GPT2Config::preset("tiny");
    deep.n_layer = 1;
    GPT2 shallow(deep);
    REQUIRE_THROWS_WITH(import_adapter(shallow, good), Catch::Contains("does not have"));
  }
  SECTION("a missing key") {
    AdapterState bad = good;
    bad.tensors.pop_back();
    GPT2 fresh(GPT2Config::preset("tiny"));
    REQUIRE_THROWS_WITH(import_adapter(fresh, bad), Catch::Contains("no lora_B"));
  }
  SECTION("a missing folder") {
    GPT2 fresh(GPT2Config::preset("tiny"));
    REQUIRE_THROWS_WITH(load_adapter(fresh, "/nonexistent/adapter"), Catch::Contains("adapter_model.safetensors"));
  }
}

TEST_CASE("a LoRA model saves its base weights in Hugging Face's layout", "[lora]") {
  auto model = models::load_model(kFixtureDir, "");
  LoRAConfig config;
  apply_lora(*model, config);
  const auto state = model->hf_state();
  REQUIRE(state.size() == 28);
  for (auto& [name, t] : state) REQUIRE(name.find("lora") == std::string::npos);
  for (auto& [name, t] : state) REQUIRE(name.find("base_layer") == std::string::npos);
}

TEST_CASE("PEFT's rank_pattern and alpha_pattern set a module's own rank and scale", "[lora]") {
  // Two models: one with rank 4 / alpha 8 everywhere except mlp.c_fc (rank 2, alpha 32), exported as a
  // PEFT config with those patterns; loading must reproduce the same function.
  GPT2 model(GPT2Config::preset("tiny"), 23);
  LoRAConfig attn_config;
  attn_config.targets = {"attn.c_attn"};
  attn_config.options.rank = 4, attn_config.options.alpha = 8;
  apply_lora(model, attn_config);
  const AdapterState attn_state = models::export_adapter(model, "tiny");
  remove_lora(model);
  LoRAConfig fc_config;
  fc_config.targets = {"mlp.c_fc"};
  fc_config.options.rank = 2, fc_config.options.alpha = 32;
  apply_lora(model, fc_config);
  const AdapterState fc_state = models::export_adapter(model, "tiny");
  AdapterState combined = attn_state;
  for (const auto& t : fc_state.tensors) combined.tensors.push_back(t);
  auto j = nlohmann::json::parse(attn_state.config_json);
  j["rank_pattern"] = {{"c_fc", 2}};
  j["alpha_pattern"] = {{"mlp.c_fc", 32}};
  combined.config_json = j.dump();
  GPT2 loaded(GPT2Config::preset("tiny"), 23);
  import_adapter(loaded, combined);
  for (auto& [path, layer] : lora_layers(loaded)) {
    INFO(path);
    const bool fc = path.find("c_fc") != std::string::npos;
    REQUIRE(layer->rank() == (fc ? 2 : 4));
    REQUIRE(layer->scaling() == (fc ? 16.0 : 2.0));
  }
}

TEST_CASE("a refused adapter leaves the model's current adapter in place", "[lora]") {
  GPT2 model(GPT2Config::preset("tiny"), 24);
  LoRAConfig config;
  config.options.rank = 4;
  apply_lora(model, config);
  randomize_adapters(model, 25);
  NoGradGuard no_grad;
  const Tensor ids = random_ids(1, 6, 101, 26);
  const Tensor before = model.forward(ids);
  AdapterState bad = models::export_adapter(model, "tiny");
  bad.tensors.back().second = Tensor::zeros({3, 3});  // the last lora_B has a wrong shape
  REQUIRE_THROWS_AS(import_adapter(model, bad), Error);
  REQUIRE(lora_layers(model).size() == 2);
  testing::require_close(model.forward(ids), before, 0, 0);
  // Slice metadata that points outside the layer is refused, not read out of bounds.
  AdapterState hostile = models::export_adapter(model, "tiny");
  for (auto& [key, value] : hostile.metadata) {
    if (key.rfind("lora_cpp.slices.", 0) == 0) value = "0:48,1000:48";
  }
  REQUIRE_THROWS_WITH(import_adapter(model, hostile), Catch::Contains("slice metadata"));
  testing::require_close(model.forward(ids), before, 0, 0);
  // Offsets near 2^63, where offset + size wraps to a negative number: refused before any index is formed
  // (a wrapped check once let them through, and filling B then wrote far outside the heap block).
  for (const std::string& wrapping :
       {"9223372036854775800:48,0:48", "0:48,9223372036854775807:48", "9223372036854775807:9223372036854775807,0:48"}) {
    INFO(wrapping);
    AdapterState near_overflow = models::export_adapter(model, "tiny");
    for (auto& [key, value] : near_overflow.metadata) {
      if (key.rfind("lora_cpp.slices.", 0) == 0) value = wrapping;
    }
    REQUIRE_THROWS_WITH(import_adapter(model, near_overflow), Catch::Contains("slice metadata"));
    testing::require_close(model.forward(ids), before, 0, 0);
  }
}
