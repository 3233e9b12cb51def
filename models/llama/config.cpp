// LlamaConfig presets and config.json reading/writing.
#include "models/llama/config.h"

#include <set>
#include <sstream>

#include "core/error.h"

namespace lora::llama {

// bos_token_id / eos_token_id: one id, a list of ids (Llama 3 stops on any of several), or null.
std::vector<int64_t> read_token_ids(ConfigReader& r, const std::string& key, int64_t vocab_size) {
  r.mark_read(key);
  if (!r.has(key)) return {};
  const nlohmann::json& j = r.json()[key];
  std::vector<int64_t> ids;
  for (const auto& v : j.is_array() ? j : nlohmann::json::array({j})) {
    if (!v.is_number_integer()) r.fail(key, fmt::format("= {} is not a token id or a list of them", j.dump()));
    // An id outside the vocabulary cannot occur, so it marks nothing (as in transformers).
    if (v.get<int64_t>() >= 0 && v.get<int64_t>() < vocab_size) ids.push_back(v.get<int64_t>());
  }
  return ids;
}

nlohmann::json token_ids_json(const std::vector<int64_t>& ids) {
  if (ids.empty()) return nullptr;
  if (ids.size() == 1) return ids[0];
  return ids;
}

// The rotary settings: transformers 4.x writes rope_theta and rope_scaling at the top level, 5.x one
// rope_parameters object holding rope_theta, rope_type and the scaling fields.
void read_rope(ConfigReader& r, double default_theta, double& theta_out, nn::RopeScaling& scaling_out) {
  struct {
    double rope_theta;
    nn::RopeScaling rope_scaling;
  } c;
  nlohmann::json params = r.object("rope_parameters");
  nlohmann::json scaling = r.object("rope_scaling");
  const std::string params_key = params.empty() ? "rope_scaling" : "rope_parameters";
  if (!params.empty() && !scaling.empty() && params != scaling) {
    r.fail("rope_scaling", "and 'rope_parameters' are both given and differ");
  }
  nlohmann::json rope = params.empty() ? scaling : params;
  c.rope_theta = r.number("rope_theta", default_theta, 1.0 + 1e-9, 1e12);
  // Within the object: each field read once; anything else is a scaling this implementation does not know.
  std::set<std::string> seen;
  auto field = [&](const char* key) -> const nlohmann::json* {
    seen.insert(key);
    return rope.contains(key) && !rope[key].is_null() ? &rope[key] : nullptr;
  };
  auto number = [&](const char* key, double fallback) {
    const nlohmann::json* v = field(key);
    if (!v) return fallback;
    if (!v->is_number()) r.fail(params_key, fmt::format("field '{}' = {} must be a number", key, v->dump()));
    return v->get<double>();
  };
  if (const nlohmann::json* theta = field("rope_theta")) {
    if (!theta->is_number() || theta->get<double>() <= 1.0)
      r.fail(params_key, fmt::format("rope_theta = {} must be a number above 1", theta->dump()));
    if (r.has("rope_theta") && r.json()["rope_theta"].get<double>() != theta->get<double>()) {
      r.fail("rope_theta", fmt::format("= {} differs from {}.rope_theta = {}", r.json()["rope_theta"].dump(),
                                       params_key, theta->dump()));
    }
    c.rope_theta = theta->get<double>();
  }
  const nlohmann::json* type = field("rope_type");
  const nlohmann::json* legacy_type = field("type");
  if (!type) type = legacy_type;
  std::string kind = "default";
  if (type) {
    if (!type->is_string()) r.fail(params_key, fmt::format("rope_type = {} must be a string", type->dump()));
    kind = type->get<std::string>();
  }
  if (kind != "default" && kind != "linear" && kind != "llama3") {
    r.fail(params_key, fmt::format("rope_type '{}' is not implemented (default, linear and llama3 are)", kind));
  }
  c.rope_scaling.type = kind;
  if (kind != "default") {
    c.rope_scaling.factor = number("factor", 0.0);
    if (!(c.rope_scaling.factor >= 1.0)) r.fail(params_key, fmt::format("{} scaling needs a factor >= 1", kind));
  }
  if (kind == "llama3") {
    c.rope_scaling.low_freq_factor = number("low_freq_factor", 1.0);
    c.rope_scaling.high_freq_factor = number("high_freq_factor", 4.0);
    c.rope_scaling.original_max_position_embeddings =
        static_cast<int64_t>(number("original_max_position_embeddings", 8192.0));
  }
  for (const auto& [key, value] : rope.items()) {
    if (!seen.count(key)) {
      r.fail(params_key,
             fmt::format("field '{}' = {} is not supported by {} rope scaling here", key, value.dump(), kind));
    }
  }
  theta_out = c.rope_theta;
  scaling_out = c.rope_scaling;
}

nlohmann::json LlamaConfig::preset_json(const std::string& name) {
  LlamaConfig c;
  if (name == "smollm2-135m") {
    c.vocab_size = 49152, c.hidden_size = 576, c.intermediate_size = 1536, c.num_hidden_layers = 30;
    c.num_attention_heads = 9, c.num_key_value_heads = 3, c.head_dim = 64, c.max_position_embeddings = 8192;
    c.rms_norm_eps = 1e-5, c.rope_theta = 100000.0, c.tie_word_embeddings = true;
    c.initializer_range = 0.041666666666666664, c.bos_token_ids = {0}, c.eos_token_ids = {0};
    return c.to_json();
  }
  if (name == "llama-tiny") {
    c.vocab_size = 101, c.hidden_size = 64, c.intermediate_size = 128, c.num_hidden_layers = 2;
    c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 16, c.max_position_embeddings = 64;
    c.rms_norm_eps = 1e-5, c.rope_theta = 10000.0;
    return c.to_json();
  }
  return nullptr;
}

void LlamaConfig::validate() const {
  LORA_CHECK(vocab_size > 0 && hidden_size > 0 && intermediate_size > 0 && num_hidden_layers > 0 &&
                 num_attention_heads > 0 && num_key_value_heads > 0 && head_dim > 0 && max_position_embeddings > 0,
             "Llama config: sizes must be positive ({})", str());
  LORA_CHECK(num_attention_heads % num_key_value_heads == 0,
             "Llama config: num_attention_heads {} is not a multiple of num_key_value_heads {}", num_attention_heads,
             num_key_value_heads);
  LORA_CHECK(head_dim % 2 == 0, "Llama config: head_dim {} must be even for rotary embeddings", head_dim);
  LORA_CHECK(rms_norm_eps > 0, "Llama config: rms_norm_eps must be positive");
  LORA_CHECK(attention_dropout >= 0 && attention_dropout < 1, "Llama config: attention_dropout {} is outside [0, 1)",
             attention_dropout);
}

LlamaConfig LlamaConfig::read(ConfigReader& r) {
  LlamaConfig c;
  c.model_type = r.string("model_type", "llama");
  if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2") {
    r.fail("model_type", fmt::format("'{}' is not a Llama-family type (llama, mistral, qwen2)", c.model_type));
  }
  // Bounds far above any published model, so that a hostile config fails here and not in the allocator.
  c.vocab_size = r.required_integer("vocab_size", 1, 1 << 22);
  c.hidden_size = r.required_integer("hidden_size", 1, 1 << 16);
  c.intermediate_size = r.required_integer("intermediate_size", 1, 1 << 20);
  c.num_hidden_layers = r.required_integer("num_hidden_layers", 1, 1024);
  c.num_attention_heads = r.required_integer("num_attention_heads", 1, 1024);
  c.num_key_value_heads = r.integer("num_key_value_heads", c.num_attention_heads, 1, 1024);
  if (!r.has("head_dim") && c.hidden_size % c.num_attention_heads != 0) {
    r.fail("hidden_size", fmt::format("{} is not divisible by num_attention_heads {} (and no head_dim is given)",
                                      c.hidden_size, c.num_attention_heads));
  }
  c.head_dim = r.integer("head_dim", c.hidden_size / c.num_attention_heads, 2, 4096);
  const int64_t default_context = c.model_type == "qwen2" ? 32768 : c.model_type == "mistral" ? 131072 : 2048;
  c.max_position_embeddings = r.integer("max_position_embeddings", default_context, 1, 1 << 22);
  c.rms_norm_eps = r.number("rms_norm_eps", 1e-6, 1e-30, 1.0);
  c.attention_dropout = r.number("attention_dropout", 0.0, 0.0, 0.99);
  c.initializer_range = r.number("initializer_range", 0.02, 0.0, 10.0);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  if (c.model_type == "llama") {
    c.qkv_bias = c.o_bias = r.boolean("attention_bias", false);
    c.mlp_bias = r.boolean("mlp_bias", false);
  } else if (c.model_type == "qwen2") {
    c.qkv_bias = true;  // Qwen2 always has q, k, v biases and none on o_proj
  }
  read_rope(r, 10000.0, c.rope_theta, c.rope_scaling);  // transformers' default for all three
  c.bos_token_ids = read_token_ids(r, "bos_token_id", c.vocab_size);
  c.eos_token_ids = read_token_ids(r, "eos_token_id", c.vocab_size);

  // What lora.cpp's Llama computes; anything else would be a different model.
  r.expect_one_of("hidden_act", {"silu"}, "the MLP computes SwiGLU with SiLU");
  r.expect_one_of("rope_interleaved", {false}, "rotary embeddings rotate halves (x[i], x[i + D/2]), not pairs");
  r.expect_one_of("partial_rotary_factor", {1.0, 1}, "the whole head dimension is rotated");
  r.integer("pretraining_tp", 1, 1, 1 << 10);  // a way to split the same matmuls: the same function
  r.mark_read("is_llama_config");              // SmolLM's marker
  // A sliding window at least as long as the context never hides anything: the same as none. Shorter ones
  // are not implemented.
  auto check_window = [&](const std::string& key, int64_t window) {
    if (window > 0 && window < c.max_position_embeddings) {
      r.fail(key, fmt::format("= {} is a sliding attention window shorter than the context ({}): not supported", window,
                              c.max_position_embeddings));
    }
  };
  if (c.model_type == "mistral") {
    check_window("sliding_window",
                 r.json().contains("sliding_window") ? r.integer("sliding_window", 0, 1, 1 << 24) : 4096);
    r.mark_read("sliding_window");
  } else if (c.model_type == "qwen2") {
    const bool use = r.boolean("use_sliding_window", false);
    const int64_t window = r.integer("sliding_window", 4096, 1, 1 << 24);
    r.integer("max_window_layers", 0, 0, 1 << 20);
    if (use) check_window("sliding_window", window);
  }
  if (r.has("layer_types")) {  // transformers 5: per-layer attention kinds
    const nlohmann::json& types = r.json()["layer_types"];
    for (const auto& t : types) {
      if (t != "full_attention")
        r.fail("layer_types", fmt::format("holds {}: only full_attention layers are supported", t.dump()));
    }
  }
  r.mark_read("layer_types");
  r.finish();
  try {
    c.validate();
  } catch (const Error& e) {
    LORA_FAIL("config {}: {}", r.source(), e.what());
  }
  return c;
}

LlamaConfig LlamaConfig::from_json(const nlohmann::json& json, const std::string& source) {
  ConfigReader reader(json, source);
  return read(reader);
}

nlohmann::json LlamaConfig::to_json() const {
  const char* arch = model_type == "qwen2"     ? "Qwen2ForCausalLM"
                     : model_type == "mistral" ? "MistralForCausalLM"
                                               : "LlamaForCausalLM";
  nlohmann::json j = {
      {"architectures", {arch}},
      {"model_type", model_type},
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
      {"hidden_act", "silu"},
      {"attention_dropout", attention_dropout},
      {"initializer_range", initializer_range},
      {"tie_word_embeddings", tie_word_embeddings},
      {"bos_token_id", token_ids_json(bos_token_ids)},
      {"eos_token_id", token_ids_json(eos_token_ids)},
  };
  if (rope_scaling.type == "default") {
    j["rope_scaling"] = nullptr;
  } else {
    j["rope_scaling"] = {{"rope_type", rope_scaling.type}, {"factor", rope_scaling.factor}};
    if (rope_scaling.type == "llama3") {
      j["rope_scaling"]["low_freq_factor"] = rope_scaling.low_freq_factor;
      j["rope_scaling"]["high_freq_factor"] = rope_scaling.high_freq_factor;
      j["rope_scaling"]["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
    }
  }
  if (model_type == "llama") {
    LORA_CHECK(qkv_bias == o_bias, "Llama config: transformers' Llama has one attention_bias for q, k, v and o");
    j["attention_bias"] = qkv_bias;
    j["mlp_bias"] = mlp_bias;
  } else if (model_type == "qwen2") {
    j["use_sliding_window"] = false;
  } else {
    j["sliding_window"] = nullptr;
  }
  return j;
}

std::string LlamaConfig::str() const {
  std::ostringstream s;
  s << model_type << " layers=" << num_hidden_layers << " hidden=" << hidden_size << " heads=" << num_attention_heads
    << " kv_heads=" << num_key_value_heads << " head_dim=" << head_dim << " mlp=" << intermediate_size
    << " vocab=" << vocab_size << " context=" << max_position_embeddings;
  return s.str();
}

}  // namespace lora::llama
