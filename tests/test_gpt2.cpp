// GPT-2 against the independent reference (tests/fixtures/make_gpt2_fixture.py: Hugging Face
// transformers in PyTorch): logits and loss within 1e-4 relative, gradients within 1e-3, greedy tokens
// identical. Also checkpoint round trips, configs and the model's structure.
#include <catch2/catch.hpp>

#include <unistd.h>
#include <filesystem>

#include "core/safetensors.h"
#include "models/gpt2/model.h"
#include "models/hf_checkpoint.h"
#include "models/registry.h"
#include "tests/model_checks.h"

using namespace lora;
using namespace lora::gpt2;

namespace {
const std::string kFixtureDir = std::string(LORA_TEST_DATA_DIR) + "/gpt2_tiny";

std::shared_ptr<GPT2LMHeadModel> load_gpt2(const std::string& path) {
  auto model = std::dynamic_pointer_cast<GPT2LMHeadModel>(models::load_model(path, ""));
  REQUIRE(model != nullptr);
  return model;
}

}  // namespace

TEST_CASE("GPT-2 matches the PyTorch reference: logits, loss, gradients, greedy tokens", "[gpt2]") {
  auto model = load_gpt2(kFixtureDir);
  REQUIRE(model->config().n_layer == 2);
  REQUIRE(testing::check_against_reference(*model, kFixtureDir + "/expected.safetensors") == 11);
}

TEST_CASE("GPT-2: KV-cache decoding gives the same logits as the full forward pass", "[gpt2]") {
  GPT2LMHeadModel model(GPT2Config::preset("tiny"), 3);
  testing::check_kv_cache_matches_forward(model, {3, 14, 15, 92, 65, 35, 89, 79}, 5);
}

TEST_CASE("GPT-2 small has 124,439,808 parameters with Hugging Face's names", "[gpt2]") {
  GPT2LMHeadModel model(GPT2Config::preset("gpt2"));
  REQUIRE(model.num_parameters() == 124439808);
  const auto params = model.named_parameters();
  REQUIRE(params.front().first == "transformer.wte.weight");
  REQUIRE(params.size() == 2 + 12 * 12 + 2);
  bool found = false;
  for (auto& [name, p] : params) {
    if (name == "transformer.h.0.attn.c_attn.weight") {
      found = true;
      REQUIRE(p.shape() == Shape{2304, 768});
    }
  }
  REQUIRE(found);
}

TEST_CASE("GPT-2 initialisation follows GPT-2's scheme", "[gpt2]") {
  GPT2Config c = GPT2Config::preset("small-test");
  GPT2LMHeadModel model(c, 1);
  for (auto& [name, p] : model.named_parameters()) {
    INFO(name);
    const std::vector<double> v = p.to_vector<double>();
    double mean = 0, sq = 0;
    for (double x : v) mean += x, sq += x * x;
    mean /= v.size();
    const double stddev = std::sqrt(sq / v.size() - mean * mean);
    if (name.find(".ln_") != std::string::npos) {
      REQUIRE(stddev == 0.0);
    } else if (name.size() > 5 && name.substr(name.size() - 5) == ".bias") {
      REQUIRE(stddev == 0.0);
      REQUIRE(mean == 0.0);
    } else if (name.find("c_proj.weight") != std::string::npos) {
      REQUIRE(stddev == Approx(0.02 / std::sqrt(2.0 * c.n_layer)).epsilon(0.1));
    } else {
      REQUIRE(stddev == Approx(0.02).epsilon(0.1));
    }
  }
}

TEST_CASE("GPT-2 checkpoints round-trip in Hugging Face's layout", "[gpt2]") {
  auto model = load_gpt2(kFixtureDir);
  const std::string dir =
      (std::filesystem::temp_directory_path() / fmt::format("lora_gpt2_roundtrip_{}", ::getpid())).string();
  std::filesystem::remove_all(dir);
  models::save_hf_checkpoint(*model, dir);
  // The written file has exactly the names and shapes of the original HF file.
  const SafeTensorsFile original = SafeTensorsFile::open(kFixtureDir + "/model.safetensors");
  const SafeTensorsFile written = SafeTensorsFile::open(dir + "/model.safetensors");
  REQUIRE(written.size() == original.size());
  for (const std::string& name : original.names()) {
    INFO(name);
    REQUIRE(written.contains(name));
    REQUIRE(written.info(name).shape == original.info(name).shape);
    REQUIRE(written.load(name).to_vector<float>() == original.load(name).to_vector<float>());
  }
  REQUIRE(written.metadata().at("format") == "pt");
  auto reloaded = load_gpt2(dir);
  NoGradGuard no_grad;
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{1, 2, 3}, {1, 3});
  testing::require_close(reloaded->forward(ids), model->forward(ids), 0, 0);
  std::filesystem::remove_all(dir);
}

TEST_CASE("GPT-2 checkpoint errors name the problem", "[gpt2]") {
  const std::string dir =
      (std::filesystem::temp_directory_path() / fmt::format("lora_gpt2_bad_{}", ::getpid())).string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  // A file for the tiny config loaded into a model of another shape.
  GPT2Config other = GPT2Config::preset("tiny");
  other.n_embd = 64;
  GPT2LMHeadModel wrong(other);
  REQUIRE_THROWS_WITH(models::load_hf_weights(wrong, models::HFWeights::open(kFixtureDir + "/model.safetensors")),
                      Catch::Contains("mis-shaped") && Catch::Contains("transformer.h.0.attn.c_attn.weight"));
  // A file missing a tensor.
  auto model = load_gpt2(kFixtureDir);
  auto state = model->hf_state();
  state.erase(state.begin());
  save_safetensors(dir + "/partial.safetensors", state);
  GPT2LMHeadModel fresh(GPT2Config::preset("tiny"));
  REQUIRE_THROWS_WITH(models::load_hf_weights(fresh, models::HFWeights::open(dir + "/partial.safetensors")),
                      Catch::Contains("missing tensors"));
  // No config.json and no preset.
  REQUIRE_THROWS_WITH(models::resolve_config(dir + "/partial.safetensors", ""), Catch::Contains("--config"));
  REQUIRE_THROWS_WITH(models::resolve_config(dir + "/nothing", ""), Catch::Contains("no such file"));
  REQUIRE_THROWS_AS(GPT2Config::preset("gpt3"), Error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("GPT-2 dropout follows train() and eval()", "[gpt2]") {
  GPT2Config c = GPT2Config::preset("tiny");
  c.resid_pdrop = c.embd_pdrop = c.attn_pdrop = 0.1;  // Hugging Face's defaults
  GPT2LMHeadModel model(c, 4);
  NoGradGuard no_grad;
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{1, 2, 3, 4}, {1, 4});
  model.eval();
  REQUIRE(model.forward(ids).to_vector<float>() == model.forward(ids).to_vector<float>());
  model.train();
  REQUIRE(model.forward(ids).to_vector<float>() != model.forward(ids).to_vector<float>());
  for (const std::string name :
       {"transformer.drop", "transformer.h.0.attn.resid_dropout", "transformer.h.1.mlp.dropout"}) {
    REQUIRE(model.module_at(name) != nullptr);
  }
}
