// GPT2Config presets and config.json reading/writing.
#include "models/gpt2/config.h"

#include <sstream>

#include "core/error.h"

namespace lora::gpt2 {

nlohmann::json GPT2Config::preset_json(const std::string& name) {
  GPT2Config c;
  c.bos_token_id = c.eos_token_id = 50256;
  if (name == "gpt2") return c.to_json();
  if (name == "gpt2-medium") return c.n_embd = 1024, c.n_layer = 24, c.n_head = 16, c.to_json();
  if (name == "gpt2-large") return c.n_embd = 1280, c.n_layer = 36, c.n_head = 20, c.to_json();
  if (name == "gpt2-xl") return c.n_embd = 1600, c.n_layer = 48, c.n_head = 25, c.to_json();
  if (name == "small-test") return c.n_positions = 256, c.n_embd = 128, c.n_layer = 4, c.n_head = 4, c.to_json();
  if (name == "tiny") {
    c.bos_token_id = c.eos_token_id = -1;
    return c.vocab_size = 101, c.n_positions = 32, c.n_embd = 48, c.n_layer = 2, c.n_head = 4, c.to_json();
  }
  return nullptr;
}

GPT2Config GPT2Config::preset(const std::string& name) {
  const nlohmann::json j = preset_json(name);
  LORA_CHECK(!j.is_null(),
             "unknown GPT-2 preset '{}': expected gpt2, gpt2-medium, gpt2-large, gpt2-xl, small-test or tiny", name);
  return from_json(j, "preset '" + name + "'");
}

void GPT2Config::validate() const {
  LORA_CHECK(vocab_size > 0 && n_positions > 0 && n_embd > 0 && n_layer > 0 && n_head > 0 && n_inner >= 0,
             "GPT-2 config: sizes must be positive ({})", str());
  LORA_CHECK(n_embd % n_head == 0, "GPT-2 config: n_embd {} is not divisible by n_head {}", n_embd, n_head);
  LORA_CHECK(layer_norm_epsilon > 0, "GPT-2 config: layer_norm_epsilon must be positive");
  for (double p : {resid_pdrop, embd_pdrop, attn_pdrop}) {
    LORA_CHECK(p >= 0 && p < 1, "GPT-2 config: dropout {} is outside [0, 1)", p);
  }
}

GPT2Config GPT2Config::read(ConfigReader& r) {
  GPT2Config c;
  // Bounds far above any published GPT-2, so that a hostile config fails here and not in the allocator.
  c.vocab_size = r.required_integer("vocab_size", 1, 1 << 22);
  c.n_positions = r.required_integer("n_positions", 1, 1 << 20);
  c.n_embd = r.required_integer("n_embd", 1, 1 << 16);
  c.n_layer = r.required_integer("n_layer", 1, 1024);
  c.n_head = r.required_integer("n_head", 1, 1024);
  c.n_inner = r.integer("n_inner", 0, 1, 1 << 20);
  if (r.has("n_ctx") && r.integer("n_ctx", 0, 1, 1 << 20) != c.n_positions) {
    r.fail("n_ctx", fmt::format("= {} differs from n_positions {}", r.json()["n_ctx"].dump(), c.n_positions));
  }
  r.mark_read("n_ctx");
  c.layer_norm_epsilon = r.number("layer_norm_epsilon", 1e-5, 1e-30, 1.0);
  c.resid_pdrop = r.number("resid_pdrop", 0.0, 0.0, 0.99);
  c.embd_pdrop = r.number("embd_pdrop", 0.0, 0.0, 0.99);
  c.attn_pdrop = r.number("attn_pdrop", 0.0, 0.0, 0.99);
  c.initializer_range = r.number("initializer_range", 0.02, 0.0, 10.0);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", true);
  c.bos_token_id = r.token_id("bos_token_id", c.vocab_size);
  c.eos_token_id = r.token_id("eos_token_id", c.vocab_size);
  // What lora.cpp's GPT-2 computes; anything else would be a different model.
  r.expect_one_of("activation_function", {"gelu_new", "gelu_pytorch_tanh"},
                  "the MLP computes GELU's tanh approximation (gelu_new)");
  r.expect_one_of("scale_attn_weights", {true}, "attention scores are always scaled by 1/sqrt(head_dim)");
  r.expect_one_of("scale_attn_by_inverse_layer_idx", {false}, "attention scores are not scaled by 1/(layer + 1)");
  // Upcasting attention to float32 changes nothing here: everything is float32 already.
  r.boolean("reorder_and_upcast_attn", false);
  // GPT2DoubleHeadsModel's classification head settings: no effect on the language model.
  for (const char* key :
       {"summary_type", "summary_use_proj", "summary_activation", "summary_proj_to_labels", "summary_first_dropout"}) {
    r.mark_read(key);
  }
  r.finish();
  try {
    c.validate();
  } catch (const Error& e) {
    LORA_FAIL("config {}: {}", r.source(), e.what());
  }
  return c;
}

GPT2Config GPT2Config::from_json(const nlohmann::json& json, const std::string& source) {
  ConfigReader reader(json, source);
  return read(reader);
}

nlohmann::json GPT2Config::to_json() const {
  nlohmann::json j = {
      {"architectures", {"GPT2LMHeadModel"}},
      {"model_type", "gpt2"},
      {"activation_function", "gelu_new"},
      {"vocab_size", vocab_size},
      {"n_positions", n_positions},
      {"n_ctx", n_positions},
      {"n_embd", n_embd},
      {"n_layer", n_layer},
      {"n_head", n_head},
      {"n_inner", n_inner > 0 ? nlohmann::json(n_inner) : nlohmann::json(nullptr)},
      {"layer_norm_epsilon", layer_norm_epsilon},
      {"resid_pdrop", resid_pdrop},
      {"embd_pdrop", embd_pdrop},
      {"attn_pdrop", attn_pdrop},
      {"initializer_range", initializer_range},
      {"scale_attn_weights", true},
      {"scale_attn_by_inverse_layer_idx", false},
      {"tie_word_embeddings", tie_word_embeddings},
  };
  if (bos_token_id >= 0) j["bos_token_id"] = bos_token_id;
  if (eos_token_id >= 0) j["eos_token_id"] = eos_token_id;
  return j;
}

std::string GPT2Config::str() const {
  std::ostringstream s;
  s << "n_layer=" << n_layer << " n_head=" << n_head << " n_embd=" << n_embd << " n_positions=" << n_positions
    << " vocab_size=" << vocab_size;
  return s.str();
}

}  // namespace lora::gpt2
