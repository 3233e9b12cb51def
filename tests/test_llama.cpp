// Llama-family models against the independent reference (tests/fixtures/make_llama_fixtures.py: Hugging
// Face transformers in PyTorch): logits and loss within 1e-4 of their scale, every gradient within 1e-3,
// greedy tokens identical, KV-cache decoding equal to the full forward. Also config.json as transformers
// 4.x and 5.x write it, bf16/f16/sharded checkpoints, saving, LoRA targets, and refused configs.
#include <catch2/catch.hpp>

#include <unistd.h>
#include <filesystem>
#include <fstream>

#include "models/hf_checkpoint.h"
#include "models/llama/model.h"
#include "models/lora.h"
#include "models/registry.h"
#include "tests/model_checks.h"

using namespace lora;
namespace fs = std::filesystem;

namespace {

const std::string kFixtures = std::string(LORA_TEST_DATA_DIR);

std::string scratch(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / fmt::format("lora_test_llama_{}_{}", name, ::getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

// The error create_model gives for the llama_tied config with `field` set to `value` (null: removed).
std::string config_error(const std::string& field, const nlohmann::json& value,
                         const std::string& base = "llama_tied") {
  nlohmann::json j = read_json(kFixtures + "/" + base + "/config.json");
  if (value.is_null())
    j.erase(field);
  else
    j[field] = value;
  try {
    models::create_model({j, "'test config'"});
  } catch (const Error& e) {
    return e.what();
  }
  return "(accepted)";
}

}  // namespace

TEST_CASE("Llama with GQA, an untied head, biases, llama3 rope scaling, bf16 shards matches transformers", "[llama]") {
  auto model = models::load_model(kFixtures + "/llama_gqa", "");
  REQUIRE(model->model_type() == "llama");
  REQUIRE(model->dims().n_kv_head == 2);
  REQUIRE(testing::check_against_reference(*model, kFixtures + "/llama_gqa/expected.safetensors") == 35);
}

TEST_CASE("Llama with a tied head and multi-query attention (SmolLM's layout) matches transformers", "[llama]") {
  auto model = models::load_model(kFixtures + "/llama_tied", "");
  REQUIRE(model->dims().n_kv_head == 1);
  REQUIRE(testing::check_against_reference(*model, kFixtures + "/llama_tied/expected.safetensors") == 20);
}

TEST_CASE("Qwen2 with q/k/v biases and f16 weights matches transformers", "[llama]") {
  auto model = models::load_model(kFixtures + "/qwen2_tiny", "");
  REQUIRE(model->model_type() == "qwen2");
  REQUIRE(testing::check_against_reference(*model, kFixtures + "/qwen2_tiny/expected.safetensors") == 26);
}

TEST_CASE("Llama-family KV-cache decoding gives the same logits as the full forward pass", "[llama]") {
  for (const std::string name : {"llama_gqa", "llama_tied", "qwen2_tiny"}) {
    INFO(name);
    auto model = models::load_model(kFixtures + "/" + name, "");
    testing::check_kv_cache_matches_forward(*model, {3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26}, 5);
  }
}

TEST_CASE("config.json as transformers 4.x writes it reads as the same model as 5.x's", "[llama]") {
  auto v5 = models::load_model(kFixtures + "/llama_gqa", "");
  auto v4 = models::load_model(kFixtures + "/llama_gqa", kFixtures + "/llama_gqa/config_v4.json");
  REQUIRE(v4->hf_config() == v5->hf_config());
  NoGradGuard no_grad;
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{1, 2, 3, 40, 50}, {1, 5});
  testing::require_close(v4->forward(ids), v5->forward(ids), 0, 0);
  // Both spellings at once must agree.
  nlohmann::json both = read_json(kFixtures + "/llama_gqa/config.json");
  both["rope_theta"] = 500000.0;
  REQUIRE_THROWS_WITH(models::create_model({both, "'both'"}), Catch::Contains("rope_theta"));
}

TEST_CASE("Llama checkpoints round-trip, single-file and sharded, and load back in the same layout", "[llama]") {
  auto model = models::load_model(kFixtures + "/llama_gqa", "");
  NoGradGuard no_grad;
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{7, 8, 9, 10}, {1, 4});
  const Tensor expected = model->forward(ids);
  const std::string dir = scratch("roundtrip");
  models::save_hf_checkpoint(*model, dir);
  REQUIRE(fs::exists(dir + "/model.safetensors"));
  testing::require_close(models::load_model(dir, "")->forward(ids), expected, 0, 0);
  // Saved again in shards of at most 16 KB: an index and several files, and the single file is gone.
  models::save_hf_checkpoint(*model, dir, 16 * 1024);
  REQUIRE(fs::exists(dir + "/model.safetensors.index.json"));
  REQUIRE_FALSE(fs::exists(dir + "/model.safetensors"));
  const models::HFWeights shards = models::HFWeights::open(dir);
  REQUIRE(shards.num_files() > 2);
  testing::require_close(models::load_model(dir, "")->forward(ids), expected, 0, 0);
  const auto config = read_json(dir + "/config.json");
  REQUIRE(config["model_type"] == "llama");
  REQUIRE(config["architectures"][0] == "LlamaForCausalLM");
  REQUIRE(config["rope_scaling"]["rope_type"] == "llama3");
  fs::remove_all(dir);
}

TEST_CASE("a sharded checkpoint's index is checked against its shards", "[llama]") {
  const std::string dir = scratch("index");
  for (const auto& entry : fs::directory_iterator(kFixtures + "/llama_gqa")) fs::copy(entry.path(), dir);
  nlohmann::json index = read_json(dir + "/model.safetensors.index.json");
  const std::string first_key = index["weight_map"].begin().key();
  SECTION("a shard name that is a path") {
    index["weight_map"][first_key] = "../elsewhere.safetensors";
    std::ofstream(dir + "/model.safetensors.index.json") << index.dump();
    REQUIRE_THROWS_WITH(models::HFWeights::open(dir), Catch::Contains("not a plain file name"));
  }
  SECTION("a tensor listed in the wrong shard") {
    std::string other;
    for (const auto& [key, file] : index["weight_map"].items()) {
      if (file != index["weight_map"][first_key]) other = file;
    }
    index["weight_map"][first_key] = other;
    std::ofstream(dir + "/model.safetensors.index.json") << index.dump();
    REQUIRE_THROWS_WITH(models::HFWeights::open(dir), Catch::Contains(first_key));
  }
  SECTION("a tensor missing from the index") {
    index["weight_map"].erase(first_key);
    std::ofstream(dir + "/model.safetensors.index.json") << index.dump();
    REQUIRE_THROWS_WITH(models::HFWeights::open(dir), Catch::Contains("does not list"));
  }
  fs::remove_all(dir);
}

TEST_CASE("Llama configs: what is not implemented is refused, naming the field", "[llama]") {
  CHECK_THAT(config_error("hidden_act", "gelu"), Catch::Contains("hidden_act") && Catch::Contains("SiLU"));
  CHECK_THAT(config_error("rope_parameters", {{"rope_type", "yarn"}, {"rope_theta", 10000.0}, {"factor", 4.0}}),
             Catch::Contains("rope_parameters") && Catch::Contains("yarn"));
  CHECK_THAT(config_error("rope_parameters",
                          {{"rope_type", "linear"}, {"rope_theta", 10000.0}, {"factor", 2.0}, {"beta_fast", 32}}),
             Catch::Contains("beta_fast"));
  CHECK_THAT(config_error("partial_rotary_factor", 0.5), Catch::Contains("partial_rotary_factor"));
  CHECK_THAT(config_error("rope_interleaved", true), Catch::Contains("rope_interleaved"));
  CHECK_THAT(config_error("quantization_config", {{"quant_method", "bitsandbytes"}}),
             Catch::Contains("quantization_config"));
  CHECK_THAT(config_error("num_hidden_layers", 100000),
             Catch::Contains("num_hidden_layers") && Catch::Contains("100000"));
  CHECK_THAT(config_error("num_key_value_heads", 3), Catch::Contains("num_key_value_heads"));
  CHECK_THAT(config_error("hidden_size", "64"), Catch::Contains("hidden_size") && Catch::Contains("integer"));
  CHECK_THAT(config_error("vocab_size", nullptr), Catch::Contains("vocab_size") && Catch::Contains("missing"));
  CHECK_THAT(config_error("model_type", "falcon"), Catch::Contains("falcon") && Catch::Contains("not supported"));
  CHECK_THAT(config_error("is_encoder_decoder", true), Catch::Contains("is_encoder_decoder"));
  // Mistral's sliding window: refused when shorter than the context, the same as none when not.
  nlohmann::json mistral = read_json(kFixtures + "/llama_tied/config.json");
  mistral["model_type"] = "mistral";
  mistral.erase("attention_bias");  // Llama's fields; Mistral has no biases
  mistral.erase("mlp_bias");
  mistral["sliding_window"] = 32;
  REQUIRE_THROWS_WITH(models::create_model({mistral, "'m'"}), Catch::Contains("sliding_window"));
  mistral["sliding_window"] = 64;
  REQUIRE_NOTHROW(models::create_model({mistral, "'m'"}));
  mistral.erase("sliding_window");  // transformers' default is a 4096-token window: longer than 64 here
  REQUIRE_NOTHROW(models::create_model({mistral, "'m'"}));
  // Metadata fields are accepted.
  CHECK(config_error("transformers_version", "4.99.0") == "(accepted)");
  CHECK(config_error("is_llama_config", true) == "(accepted)");
}

TEST_CASE("a checkpoint that contradicts its config is refused, listing the tensors", "[llama]") {
  nlohmann::json wide = read_json(kFixtures + "/llama_tied/config.json");
  wide["intermediate_size"] = 64;
  const std::string dir = scratch("contradict");
  std::ofstream(dir + "/config.json") << wide.dump();
  fs::copy(kFixtures + "/llama_tied/model.safetensors", dir + "/model.safetensors");
  REQUIRE_THROWS_WITH(models::load_model(dir, ""), Catch::Contains("mis-shaped") && Catch::Contains("gate_proj"));
  fs::remove_all(dir);
}

TEST_CASE("LoRA on Llama: q,v and PEFT's layer names, all-linear without the head, adapters as PEFT writes them",
          "[llama][lora]") {
  auto model = models::load_model(kFixtures + "/llama_gqa", "");
  nn::LoRAConfig config;
  config.options.rank = 4;
  config.targets = {"q_proj", "v"};  // a layer name and a declared target, both meaning whole projections
  const nn::LoRASummary s = models::apply_lora(*model, config);
  REQUIRE(s.adapted_layers == 4);
  // q_proj [64, 48], v_proj [32, 48]: r (in + out) each, 2 layers.
  REQUIRE(s.trainable_params == 2 * (4 * (48 + 64) + 4 * (48 + 32)));
  const nn::AdapterState adapter = models::export_adapter(*model, "llama_gqa");
  const auto cfg = nlohmann::json::parse(adapter.config_json);
  REQUIRE(cfg["fan_in_fan_out"] == false);
  bool has_q = false;
  for (const auto& [key, t] : adapter.tensors)
    has_q = has_q || key == "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
  REQUIRE(has_q);

  auto all = models::load_model(kFixtures + "/llama_gqa", "");
  config.targets = {"all-linear"};
  REQUIRE(models::apply_lora(*all, config).adapted_layers == 2 * 7);  // q, k, v, o, gate, up, down; not lm_head
  for (const auto& [path, layer] : nn::lora_layers(*all)) REQUIRE(path != "lm_head");

  auto none = models::load_model(kFixtures + "/llama_gqa", "");
  config.targets = {"c_attn"};
  REQUIRE_THROWS_WITH(models::apply_lora(*none, config), Catch::Contains("c_attn") && Catch::Contains("q_proj"));
}

TEST_CASE("merged LoRA on Llama equals unmerged, and folds into a plain Llama", "[llama][lora]") {
  auto model = models::load_model(kFixtures + "/llama_tied", "");
  nn::LoRAConfig config;
  config.options.rank = 4;
  config.targets = {"all-linear"};
  models::apply_lora(*model, config);
  Generator gen(3);
  NoGradGuard no_grad;
  for (auto& [path, layer] : nn::lora_layers(*model))
    layer->lora_B.copy_from(Tensor::randn(layer->lora_B.shape(), gen, 0, 0.1));
  model->eval();
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{4, 8, 15, 16, 23, 42}, {1, 6});
  const Tensor unmerged = model->forward(ids);
  nn::merge_lora(*model);
  testing::require_close(model->forward(ids), unmerged, 1e-4, 1e-5);
  nn::remove_lora(*model, /*keep_merged=*/true);
  const std::string dir = scratch("merged");
  models::save_hf_checkpoint(*model, dir);
  testing::require_close(models::load_model(dir, "")->forward(ids), unmerged, 1e-4, 1e-5);
  fs::remove_all(dir);
}
