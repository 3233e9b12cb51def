// GPT2Config presets and config.json I/O.
#include "models/gpt2/config.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"

namespace lora::gpt2 {

GPT2Config GPT2Config::preset(const std::string& name) {
  GPT2Config c;
  if (name == "gpt2") return c;
  if (name == "gpt2-medium") return c.n_embd = 1024, c.n_layer = 24, c.n_head = 16, c;
  if (name == "gpt2-large") return c.n_embd = 1280, c.n_layer = 36, c.n_head = 20, c;
  if (name == "gpt2-xl") return c.n_embd = 1600, c.n_layer = 48, c.n_head = 25, c;
  if (name == "tiny") return c.vocab_size = 101, c.n_positions = 32, c.n_embd = 48, c.n_layer = 2, c.n_head = 4, c;
  if (name == "small-test") return c.n_positions = 256, c.n_embd = 128, c.n_layer = 4, c.n_head = 4, c;
  LORA_FAIL("unknown GPT-2 config '{}': expected gpt2, gpt2-medium, gpt2-large, gpt2-xl, tiny or small-test", name);
}

void GPT2Config::validate() const {
  LORA_CHECK(vocab_size > 0 && n_positions > 0 && n_embd > 0 && n_layer > 0 && n_head > 0,
             "GPT-2 config: sizes must be positive ({})", str());
  LORA_CHECK(n_embd % n_head == 0, "GPT-2 config: n_embd {} is not divisible by n_head {}", n_embd, n_head);
  LORA_CHECK(layer_norm_epsilon > 0, "GPT-2 config: layer_norm_epsilon must be positive");
  LORA_CHECK(dropout >= 0 && dropout < 1, "GPT-2 config: dropout {} is outside [0, 1)", dropout);
}

GPT2Config GPT2Config::from_json_file(const std::string& path) {
  std::ifstream in(path);
  LORA_CHECK(in.good(), "cannot open GPT-2 config '{}'", path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    LORA_FAIL("GPT-2 config '{}' is not valid JSON: {}", path, e.what());
  }
  LORA_CHECK(j.is_object(), "GPT-2 config '{}': expected a JSON object", path);
  GPT2Config c;
  auto read_int = [&](const char* key, int64_t& field, bool required) {
    if (!j.contains(key)) {
      LORA_CHECK(!required, "GPT-2 config '{}': missing '{}'", path, key);
      return;
    }
    LORA_CHECK(j[key].is_number_integer(), "GPT-2 config '{}': '{}' must be an integer", path, key);
    field = j[key].get<int64_t>();
  };
  auto read_float = [&](const char* key, double& field) {
    if (!j.contains(key)) return;
    LORA_CHECK(j[key].is_number(), "GPT-2 config '{}': '{}' must be a number", path, key);
    field = j[key].get<double>();
  };
  read_int("vocab_size", c.vocab_size, true);
  read_int("n_positions", c.n_positions, true);
  read_int("n_embd", c.n_embd, true);
  read_int("n_layer", c.n_layer, true);
  read_int("n_head", c.n_head, true);
  read_float("layer_norm_epsilon", c.layer_norm_epsilon);
  read_float("resid_pdrop", c.dropout);
  read_float("initializer_range", c.initializer_range);
  try {
    c.validate();
  } catch (const Error& e) {
    LORA_FAIL("GPT-2 config '{}': {}", path, e.what());
  }
  return c;
}

void GPT2Config::save_json_file(const std::string& path) const {
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
      {"layer_norm_epsilon", layer_norm_epsilon},
      {"resid_pdrop", dropout},
      {"embd_pdrop", dropout},
      {"attn_pdrop", 0.0},
      {"initializer_range", initializer_range},
      {"tie_word_embeddings", true},
  };
  // GPT-2's <|endoftext|>, only where the vocabulary has it (small test vocabularies do not).
  if (vocab_size > 50256) j["bos_token_id"] = j["eos_token_id"] = 50256;
  write_file_atomically(path, [&](std::ostream& out) { out << j.dump(2) << "\n"; });
}

std::string GPT2Config::str() const {
  std::ostringstream s;
  s << "n_layer=" << n_layer << " n_head=" << n_head << " n_embd=" << n_embd << " n_positions=" << n_positions
    << " vocab_size=" << vocab_size;
  return s.str();
}

}  // namespace lora::gpt2
