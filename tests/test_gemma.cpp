// Gemma against the independent reference (tests/fixtures/make_gemma_fixtures.py: transformers in PyTorch):
// logits and loss within 1e-4 of their scale, every gradient within 1e-3, greedy tokens identical, KV-cache
// decoding equal to the full forward; its config read strictly; LoRA targets; saving and reloading.
#include <catch2/catch.hpp>

#include <unistd.h>
#include <filesystem>
#include <fstream>

#include "models/hf_checkpoint.h"
#include "models/lora.h"
#include "models/registry.h"
#include "tests/model_checks.h"

using namespace lora;
namespace fs = std::filesystem;

namespace {

const std::string kFixture = std::string(LORA_TEST_DATA_DIR) + "/gemma_tiny";

// The error create_model gives for the fixture's config with `field` set to `value` (null: removed).
std::string config_error(const std::string& field, const nlohmann::json& value) {
  std::ifstream in(kFixture + "/config.json");
  nlohmann::json j = nlohmann::json::parse(in);
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

TEST_CASE("Gemma (multi-query, its own head_dim, 1 + w norms, scaled embeddings, GeGLU) matches transformers",
          "[gemma]") {
  auto model = models::load_model(kFixture, "");
  REQUIRE(model->model_type() == "gemma");
  REQUIRE(model->dims().n_kv_head == 1);
  REQUIRE(model->dims().head_dim == 32);
  REQUIRE(testing::check_against_reference(*model, kFixture + "/expected.safetensors") == 20);
  testing::check_kv_cache_matches_forward(*model, {3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26}, 5);
}

TEST_CASE("Gemma: config.json read strictly, what it does not compute refused by name", "[gemma]") {
  REQUIRE(config_error("hidden_act", "gelu") == "(accepted)");  // the published checkpoints' legacy spelling
  REQUIRE_THAT(config_error("hidden_act", "silu"), Catch::Contains("hidden_act"));
  REQUIRE_THAT(config_error("hidden_activation", "gelu"), Catch::Contains("hidden_activation"));
  REQUIRE_THAT(config_error("use_bidirectional_attention", true), Catch::Contains("use_bidirectional_attention"));
  REQUIRE_THAT(config_error("num_key_value_heads", 3), Catch::Contains("not a multiple"));
  REQUIRE_THAT(config_error("rope_parameters", {{"rope_type", "yarn"}, {"factor", 2.0}}), Catch::Contains("yarn"));
  REQUIRE_THAT(config_error("sliding_window", 16), Catch::Contains("sliding_window"));
  REQUIRE_THAT(config_error("vocab_size", nullptr), Catch::Contains("vocab_size"));
}

TEST_CASE("Gemma: saved and reloaded as transformers writes it; LoRA's q, k, v name the projections", "[gemma]") {
  auto model = models::create_model(models::read_config_arg("gemma-tiny"), 3);
  const fs::path dir = fs::temp_directory_path() / fmt::format("lora_test_gemma_{}", ::getpid());
  fs::remove_all(dir);
  models::save_hf_checkpoint(*model, dir.string());
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{4, 8, 15, 16, 23, 42}, {2, 3});
  testing::require_close(models::load_model(dir.string(), "")->forward(ids), model->forward(ids), 0, 0);
  fs::remove_all(dir);

  nn::LoRAConfig lora;
  lora.targets = {"q", "v"};
  const nn::LoRASummary summary = models::apply_lora(*model, lora);
  REQUIRE(summary.adapted_layers == 4);
  bool v_proj = false;
  for (const auto& [path, layer] : nn::lora_layers(*model))
    v_proj = v_proj || path == "model.layers.1.self_attn.v_proj";
  REQUIRE(v_proj);
}
