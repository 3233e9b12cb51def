// GGUF architectures: hyperparameter keys and tensor names both ways, and Llama's q/k row permutation.
#include "models/gguf/arch.h"

#include <cmath>
#include <set>

#include "core/error.h"

namespace lora::models::gguf_io {
namespace {

using gguf::Value;

// A Hugging Face name pattern and its GGUF name ("{}" stands for the layer number).
struct NamePair {
  const char* hf;
  const char* gguf;
};

constexpr NamePair kGpt2Names[] = {
    {"transformer.wte.weight", "token_embd.weight"},
    {"transformer.wpe.weight", "position_embd.weight"},
    {"transformer.ln_f.weight", "output_norm.weight"},
    {"transformer.ln_f.bias", "output_norm.bias"},
    {"lm_head.weight", "output.weight"},
    {"transformer.h.{}.ln_1.weight", "blk.{}.attn_norm.weight"},
    {"transformer.h.{}.ln_1.bias", "blk.{}.attn_norm.bias"},
    {"transformer.h.{}.attn.c_attn.weight", "blk.{}.attn_qkv.weight"},
    {"transformer.h.{}.attn.c_attn.bias", "blk.{}.attn_qkv.bias"},
    {"transformer.h.{}.attn.c_proj.weight", "blk.{}.attn_output.weight"},
    {"transformer.h.{}.attn.c_proj.bias", "blk.{}.attn_output.bias"},
    {"transformer.h.{}.ln_2.weight", "blk.{}.ffn_norm.weight"},
    {"transformer.h.{}.ln_2.bias", "blk.{}.ffn_norm.bias"},
    {"transformer.h.{}.mlp.c_fc.weight", "blk.{}.ffn_up.weight"},
    {"transformer.h.{}.mlp.c_fc.bias", "blk.{}.ffn_up.bias"},
    {"transformer.h.{}.mlp.c_proj.weight", "blk.{}.ffn_down.weight"},
    {"transformer.h.{}.mlp.c_proj.bias", "blk.{}.ffn_down.bias"},
};

constexpr NamePair kLlamaNames[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
    {"model.layers.{}.input_layernorm.weight", "blk.{}.attn_norm.weight"},
    {"model.layers.{}.self_attn.q_proj.weight", "blk.{}.attn_q.weight"},
    {"model.layers.{}.self_attn.q_proj.bias", "blk.{}.attn_q.bias"},
    {"model.layers.{}.self_attn.k_proj.weight", "blk.{}.attn_k.weight"},
    {"model.layers.{}.self_attn.k_proj.bias", "blk.{}.attn_k.bias"},
    {"model.layers.{}.self_attn.v_proj.weight", "blk.{}.attn_v.weight"},
    {"model.layers.{}.self_attn.v_proj.bias", "blk.{}.attn_v.bias"},
    {"model.layers.{}.self_attn.o_proj.weight", "blk.{}.attn_output.weight"},
    {"model.layers.{}.self_attn.o_proj.bias", "blk.{}.attn_output.bias"},
    {"model.layers.{}.post_attention_layernorm.weight", "blk.{}.ffn_norm.weight"},
    {"model.layers.{}.mlp.gate_proj.weight", "blk.{}.ffn_gate.weight"},
    {"model.layers.{}.mlp.up_proj.weight", "blk.{}.ffn_up.weight"},
    {"model.layers.{}.mlp.down_proj.weight", "blk.{}.ffn_down.weight"},
};

std::span<const NamePair> names_of(const std::string& architecture) {
  if (architecture == "gpt2") return kGpt2Names;
  if (architecture == "llama" || architecture == "qwen2") return kLlamaNames;
  return {};
}

// Matches `name` against `pattern` (one optional "{}" for a decimal layer number); on a match returns the
// other side's pattern with the same number.
std::string translate(const std::string& name, const char* pattern, const char* other) {
  const std::string p(pattern);
  const size_t hole = p.find("{}");
  if (hole == std::string::npos) return name == p ? std::string(other) : "";
  const std::string prefix = p.substr(0, hole), suffix = p.substr(hole + 2);
  if (name.size() <= prefix.size() + suffix.size() || !name.starts_with(prefix) || !name.ends_with(suffix)) return "";
  const std::string number = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (number.empty() || number.size() > 6 || number.find_first_not_of("0123456789") != std::string::npos) return "";
  if (number.size() > 1 && number[0] == '0') return "";
  std::string out(other);
  out.replace(out.find("{}"), 2, number);
  return out;
}

int64_t json_int(const nlohmann::json& config, const char* key, int64_t fallback) {
  if (!config.contains(key) || config[key].is_null()) return fallback;
  return config[key].get<int64_t>();
}

}  // namespace

std::string gguf_architecture(const std::string& model_type) {
  if (model_type == "gpt2") return "gpt2";
  if (model_type == "llama" || model_type == "mistral") return "llama";
  if (model_type == "qwen2") return "qwen2";
  LORA_FAIL("GGUF export: model_type '{}' has no GGUF architecture here (gpt2, llama, mistral, qwen2 have)",
            model_type);
}

std::string gguf_tensor_name(const std::string& model_type, const std::string& hf_name) {
  for (const NamePair& n : names_of(gguf_architecture(model_type))) {
    std::string out = translate(hf_name, n.hf, n.gguf);
    if (!out.empty()) return out;
  }
  return "";
}

std::string hf_tensor_name(const std::string& architecture, const std::string& gguf_name) {
  for (const NamePair& n : names_of(architecture)) {
    std::string out = translate(gguf_name, n.gguf, n.hf);
    if (!out.empty()) return out;
  }
  return "";
}

int64_t permuted_heads(const nlohmann::json& config, const std::string& hf_name) {
  if (gguf_architecture(config.value("model_type", "")) != "llama") return 0;
  const int64_t heads = json_int(config, "num_attention_heads", 0);
  if (hf_name.find(".self_attn.q_proj.") != std::string::npos) return heads;
  if (hf_name.find(".self_attn.k_proj.") != std::string::npos) return json_int(config, "num_key_value_heads", heads);
  return 0;
}

int64_t hf_row_of_gguf_row(int64_t gguf_row, int64_t rows, int64_t n_heads) {
  const int64_t D = rows / n_heads, head = gguf_row / D, within = gguf_row % D;
  const int64_t i = within / 2, h = within % 2;
  return head * D + h * (D / 2) + i;
}

std::vector<std::pair<std::string, Value>> hparams_to_gguf(const nlohmann::json& c) {
  const std::string type = c.value("model_type", "");
  const std::string arch = gguf_architecture(type);
  std::vector<std::pair<std::string, Value>> kv;
  auto u32 = [&](const std::string& key, int64_t v) {
    kv.emplace_back(arch + "." + key, Value::u32(static_cast<uint32_t>(v)));
  };
  auto f32 = [&](const std::string& key, double v) {
    kv.emplace_back(arch + "." + key, Value::f32(static_cast<float>(v)));
  };
  if (arch == "gpt2") {
    const int64_t n_embd = json_int(c, "n_embd", 0);
    u32("context_length", json_int(c, "n_positions", 0));
    u32("embedding_length", n_embd);
    u32("feed_forward_length", json_int(c, "n_inner", 4 * n_embd));
    u32("block_count", json_int(c, "n_layer", 0));
    u32("attention.head_count", json_int(c, "n_head", 0));
    f32("attention.layer_norm_epsilon", c.value("layer_norm_epsilon", 1e-5));
    return kv;
  }
  const int64_t hidden = json_int(c, "hidden_size", 0), heads = json_int(c, "num_attention_heads", 1);
  const int64_t head_dim = json_int(c, "head_dim", hidden / heads);
  u32("vocab_size", json_int(c, "vocab_size", 0));
  u32("context_length", json_int(c, "max_position_embeddings", 0));
  u32("embedding_length", hidden);
  u32("feed_forward_length", json_int(c, "intermediate_size", 0));
  u32("block_count", json_int(c, "num_hidden_layers", 0));
  u32("attention.head_count", heads);
  u32("attention.head_count_kv", json_int(c, "num_key_value_heads", heads));
  f32("attention.layer_norm_rms_epsilon", c.value("rms_norm_eps", 1e-6));
  f32("rope.freq_base", c.value("rope_theta", 10000.0));
  u32("rope.dimension_count", head_dim);
  if (head_dim * heads != hidden) {  // llama.cpp derives head_dim from these two keys when they are present
    u32("attention.key_length", head_dim);
    u32("attention.value_length", head_dim);
  }
  if (c.contains("rope_scaling") && c["rope_scaling"].is_object()) {
    const nlohmann::json& s = c["rope_scaling"];
    const std::string rope_type = s.value("rope_type", s.value("type", "default"));
    if (rope_type == "linear") {
      kv.emplace_back(arch + ".rope.scaling.type", Value::string("linear"));
      f32("rope.scaling.factor", s.value("factor", 1.0));
    } else if (rope_type != "default") {
      LORA_FAIL(
          "GGUF export: rope scaling '{}' is not written (linear is; llama3 scaling needs llama.cpp's rope_freqs "
          "tensor)",
          rope_type);
    }
  }
  LORA_CHECK(!c.value("mlp_bias", false),
             "GGUF export: llama.cpp's {} architecture has no MLP biases (mlp_bias is true)", arch);
  return kv;
}

nlohmann::json config_from_gguf(const gguf::File& f) {
  const std::string arch = f.get_string("general.architecture");
  LORA_CHECK(arch == "gpt2" || arch == "llama" || arch == "qwen2",
             "GGUF file '{}': general.architecture '{}' is not "
             "supported (gpt2, llama, qwen2 are; Mistral files say llama)",
             f.path(), arch);
  std::set<std::string> honoured;
  auto uint = [&](const std::string& key) {
    honoured.insert(arch + "." + key);
    const uint64_t v = f.get_uint(arch + "." + key);
    LORA_CHECK(v <= (uint64_t(1) << 40), "GGUF file '{}': {}.{} = {} is absurdly large", f.path(), arch, key, v);
    return static_cast<int64_t>(v);
  };
  auto uint_or = [&](const std::string& key, int64_t fallback) {
    return f.contains(arch + "." + key) ? uint(key) : fallback;
  };
  auto number_or = [&](const std::string& key, double fallback) {
    honoured.insert(arch + "." + key);
    const double v = f.get_float_or(arch + "." + key).value_or(fallback);
    LORA_CHECK(std::isfinite(v), "GGUF file '{}': {}.{} is not finite", f.path(), arch, key);
    return v;
  };
  const gguf::TensorInfo* embed = f.find_tensor("token_embd.weight");
  LORA_CHECK(embed && embed->ne.size() == 2, "GGUF file '{}': token_embd.weight is missing or not 2-D", f.path());
  const int64_t vocab = embed->ne[1];
  if (f.contains(arch + ".vocab_size")) {
    LORA_CHECK(uint("vocab_size") == vocab, "GGUF file '{}': {}.vocab_size = {} but token_embd.weight has {} rows",
               f.path(), arch, f.get_uint(arch + ".vocab_size"), vocab);
  }
  nlohmann::json c;
  const bool tied = f.find_tensor("output.weight") == nullptr;
  if (arch == "gpt2") {
    c = {{"model_type", "gpt2"},
         {"vocab_size", vocab},
         {"n_positions", uint("context_length")},
         {"n_embd", uint("embedding_length")},
         {"n_layer", uint("block_count")},
         {"n_head", uint("attention.head_count")},
         {"n_inner", uint_or("feed_forward_length", 0)},
         {"layer_norm_epsilon", number_or("attention.layer_norm_epsilon", 1e-5)},
         {"tie_word_embeddings", tied}};
  } else {
    const int64_t hidden = uint("embedding_length"), heads = uint("attention.head_count");
    LORA_CHECK(heads > 0, "GGUF file '{}': {}.attention.head_count is 0", f.path(), arch);
    int64_t head_dim = hidden / heads;
    if (f.contains(arch + ".attention.key_length") || f.contains(arch + ".attention.value_length")) {
      head_dim = uint_or("attention.key_length", head_dim);
      LORA_CHECK(uint_or("attention.value_length", head_dim) == head_dim,
                 "GGUF file '{}': {}.attention.key_length and "
                 "value_length differ: not supported",
                 f.path(), arch);
    }
    const int64_t rope_dims = uint_or("rope.dimension_count", head_dim);
    LORA_CHECK(rope_dims == head_dim,
               "GGUF file '{}': {}.rope.dimension_count = {} rotates part of each head of {}: "
               "partial rotary embeddings are not supported",
               f.path(), arch, rope_dims, head_dim);
    c = {{"model_type", arch},
         {"vocab_size", vocab},
         {"hidden_size", hidden},
         {"intermediate_size", uint("feed_forward_length")},
         {"num_hidden_layers", uint("block_count")},
         {"num_attention_heads", heads},
         {"num_key_value_heads", uint_or("attention.head_count_kv", heads)},
         {"head_dim", head_dim},
         {"max_position_embeddings", uint("context_length")},
         {"rms_norm_eps", number_or("attention.layer_norm_rms_epsilon", 1e-5)},
         {"rope_theta", number_or("rope.freq_base", 10000.0)},
         {"tie_word_embeddings", tied}};
    if (arch == "llama") c["attention_bias"] = f.find_tensor("blk.0.attn_q.bias") != nullptr;
    const std::optional<std::string> scaling = f.get_string_or(arch + ".rope.scaling.type");
    honoured.insert(arch + ".rope.scaling.type");
    if (scaling && *scaling == "linear") {
      c["rope_scaling"] = {{"rope_type", "linear"}, {"factor", number_or("rope.scaling.factor", 1.0)}};
      honoured.insert(arch + ".rope.scaling.original_context_length");
    } else if (scaling && *scaling != "none") {
      LORA_FAIL("GGUF file '{}': {}.rope.scaling.type = '{}' is not supported (none and linear are)", f.path(), arch,
                *scaling);
    } else {
      // No scaling: a factor of 1 says the same.
      const double factor = number_or("rope.scaling.factor", 1.0);
      LORA_CHECK(factor == 1.0 || factor == 0.0, "GGUF file '{}': {}.rope.scaling.factor = {} without a scaling type",
                 f.path(), arch, factor);
    }
  }
  // Mixture-of-experts counts of zero describe a dense model; anything else is another model.
  for (const char* key : {"expert_count", "expert_used_count"}) {
    if (f.contains(arch + "." + key))
      LORA_CHECK(uint(key) == 0,
                 "GGUF file '{}': {}.{} > 0: mixture-of-experts models are "
                 "not supported",
                 f.path(), arch, key);
  }
  for (const auto& [key, value] : f.metadata()) {
    if (!key.starts_with(arch + ".")) continue;
    LORA_CHECK(honoured.count(key), "GGUF file '{}': the key '{}' ({}) changes the {} model and is not supported",
               f.path(), key, value.str(), arch);
  }
  auto token = [&](const char* key) -> int64_t {
    const std::optional<uint64_t> id = f.get_uint_or(std::string("tokenizer.ggml.") + key);
    return id && static_cast<int64_t>(*id) < vocab ? static_cast<int64_t>(*id) : -1;
  };
  const int64_t bos = token("bos_token_id"), eos = token("eos_token_id"), eot = token("eot_token_id");
  if (bos >= 0) c["bos_token_id"] = bos;
  if (arch == "gpt2") {
    if (eos >= 0) c["eos_token_id"] = eos;
  } else {
    nlohmann::json ends = nlohmann::json::array();
    if (eos >= 0) ends.push_back(eos);
    if (eot >= 0 && eot != eos) ends.push_back(eot);
    if (ends.size() == 1)
      c["eos_token_id"] = ends[0];
    else if (!ends.empty())
      c["eos_token_id"] = ends;
  }
  return c;
}

}  // namespace lora::models::gguf_io
