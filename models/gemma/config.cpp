// GemmaConfig presets and config.json reading/writing.
#include "models/gemma/config.h"

#include <sstream>

#include "core/error.h"
#include "models/llama/config.h"

namespace lora::gemma {

nlohmann::json GemmaConfig::preset_json(const std::string& name) {
  if (name != "gemma-tiny") return nullptr;
  GemmaConfig c;
  c.vocab_size = 101, c.hidden_size = 64, c.intermediate_size = 128, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 1, c.head_dim = 32, c.max_position_embeddings = 64;
  return c.to_json();
}

void GemmaConfig::validate() const {
  LORA_CHECK(vocab_size > 0 && hidden_size > 0 && intermediate_size > 0 && num_hidden_layers > 0 &&
                 num_attention_heads > 0 && num_key_value_heads > 0 && head_dim > 0 && max_position_embeddings > 0,
             "Gemma config: sizes must be positive ({})", str());
  LORA_CHECK(num_attention_heads % num_key_value_heads == 0,
             "Gemma config: num_attention_heads {} is not a multiple of num_key_value_heads {}", num_attention_heads,
             num_key_value_heads);
  LORA_CHECK(head_dim % 2 == 0, "Gemma config: head_dim {} must be even for rotary embeddings", head_dim);
  LORA_CHECK(rms_norm_eps > 0, "Gemma config: rms_norm_eps must be positive");
}

GemmaConfig GemmaConfig::read(ConfigReader& r) {
  GemmaConfig c;
  r.expect_one_of("model_type", {"gemma"}, "this reader is Gemma's");
  // Bounds far above any published model, so that a hostile config fails here and not in the allocator.
  c.vocab_size = r.required_integer("vocab_size", 1, 1 << 22);
  c.hidden_size = r.required_integer("hidden_size", 1, 1 << 16);
  c.intermediate_size = r.required_integer("intermediate_size", 1, 1 << 20);
  c.num_hidden_layers = r.required_integer("num_hidden_layers", 1, 1024);
  c.num_attention_heads = r.required_integer("num_attention_heads", 1, 1024);
  c.num_key_value_heads = r.integer("num_key_value_heads", c.num_attention_heads, 1, 1024);
  c.head_dim = r.integer("head_dim", 256, 2, 4096);
  c.max_position_embeddings = r.integer("max_position_embeddings", 8192, 1, 1 << 22);
  c.rms_norm_eps = r.number("rms_norm_eps", 1e-6, 1e-30, 1.0);
  c.attention_dropout = r.number("attention_dropout", 0.0, 0.0, 0.99);
  c.initializer_range = r.number("initializer_range", 0.02, 0.0, 10.0);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", true);
  c.attention_bias = r.boolean("attention_bias", false);
  llama::read_rope(r, 10000.0, c.rope_theta, c.rope_scaling);
  c.bos_token_ids = llama::read_token_ids(r, "bos_token_id", c.vocab_size);
  c.eos_token_ids = llama::read_token_ids(r, "eos_token_id", c.vocab_size);
  r.token_id("pad_token_id", c.vocab_size);
  // What lora.cpp's Gemma computes: GELU's tanh approximation ("gelu" is the published checkpoints' legacy
  // spelling of it, which transformers maps to the same), causal attention.
  r.expect_one_of("hidden_act", {"gelu_pytorch_tanh", "gelu"}, "the MLP computes GeGLU with GELU's tanh approximation");
  if (r.has("hidden_activation") && !r.json()["hidden_activation"].is_null()) {
    r.expect_one_of("hidden_activation", {"gelu_pytorch_tanh"}, "the MLP computes GELU's tanh approximation");
  }
  r.mark_read("hidden_activation");
  if (r.has("use_bidirectional_attention") && !r.json()["use_bidirectional_attention"].is_null()) {
    r.expect_one_of("use_bidirectional_attention", {false}, "attention is causal");
  }
  r.mark_read("use_bidirectional_attention");
  r.finish();
  try {
    c.validate();
  } catch (const Error& e) {
    LORA_FAIL("config {}: {}", r.source(), e.what());
  }
  return c;
}

GemmaConfig GemmaConfig::from_json(const nlohmann::json& json, const std::string& source) {
  ConfigReader reader(json, source);
  return read(reader);
}

nlohmann::json GemmaConfig::to_json() const {
  nlohmann::json j = {
      {"architectures", {"GemmaForCausalLM"}},
      {"model_type", "gemma"},
      {"vocab_size", vocab_size},
      {"hidden_size", hidden_size},
      {"intermediate_size", intermediate_size},
      {"num_hidden_layers", num_hidden_layers},
      {"num_attention_heads", num_attention_heads},
      {"num_key_value_heads", num_key_value_heads},
      {"head_dim", head_dim},
      {"max_position_embeddings", max_position_embeddings},
      {"rms_norm_eps", rms_norm_eps},
      {"rope_theta", rope_theta},
      {"hidden_act", "gelu_pytorch_tanh"},
      {"attention_bias", attention_bias},
      {"attention_dropout", attention_dropout},
      {"initializer_range", initializer_range},
      {"tie_word_embeddings", tie_word_embeddings},
      {"bos_token_id", llama::token_ids_json(bos_token_ids)},
      {"eos_token_id", llama::token_ids_json(eos_token_ids)},
  };
  j["rope_scaling"] = nullptr;
  if (rope_scaling.type != "default") {
    j["rope_scaling"] = {{"rope_type", rope_scaling.type}, {"factor", rope_scaling.factor}};
    if (rope_scaling.type == "llama3") {
      j["rope_scaling"]["low_freq_factor"] = rope_scaling.low_freq_factor;
      j["rope_scaling"]["high_freq_factor"] = rope_scaling.high_freq_factor;
      j["rope_scaling"]["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
    }
  }
  return j;
}

std::string GemmaConfig::str() const {
  std::ostringstream s;
  s << "gemma layers=" << num_hidden_layers << " hidden=" << hidden_size << " heads=" << num_attention_heads
    << " kv_heads=" << num_key_value_heads << " head_dim=" << head_dim << " mlp=" << intermediate_size
    << " vocab=" << vocab_size << " context=" << max_position_embeddings;
  return s.str();
}

}  // namespace lora::gemma
