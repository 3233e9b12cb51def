// ConfigReader: strict, field-by-field reading of config.json.
#include "models/config_reader.h"

#include <cmath>
#include <fstream>

#include "core/error.h"

namespace lora::models {
namespace {

// Fields of transformers' PretrainedConfig that do not change what the model computes: bookkeeping,
// generation defaults, label maps, runtime switches. (Fields that would change it are checked below or
// by each model, and refused when not honoured.)
const std::set<std::string>& metadata_fields() {
  static const std::set<std::string> fields = {"_name_or_path",
                                               "_commit_hash",
                                               "architectures",
                                               "model_type",
                                               "transformers_version",
                                               "torch_dtype",
                                               "dtype",
                                               "use_cache",
                                               "return_dict",
                                               "use_return_dict",
                                               "output_hidden_states",
                                               "output_attentions",
                                               "torchscript",
                                               "use_bfloat16",
                                               "tf_legacy_loss",
                                               "is_decoder",
                                               "tie_encoder_decoder",
                                               "chunk_size_feed_forward",
                                               "finetuning_task",
                                               "id2label",
                                               "label2id",
                                               "num_labels",
                                               "problem_type",
                                               "tokenizer_class",
                                               "prefix",
                                               "task_specific_params",
                                               "pad_token_id",
                                               "sep_token_id",
                                               "decoder_start_token_id",
                                               "max_length",
                                               "min_length",
                                               "do_sample",
                                               "early_stopping",
                                               "num_beams",
                                               "num_beam_groups",
                                               "diversity_penalty",
                                               "temperature",
                                               "top_k",
                                               "top_p",
                                               "typical_p",
                                               "repetition_penalty",
                                               "length_penalty",
                                               "no_repeat_ngram_size",
                                               "encoder_no_repeat_ngram_size",
                                               "bad_words_ids",
                                               "num_return_sequences",
                                               "output_scores",
                                               "return_dict_in_generate",
                                               "forced_bos_token_id",
                                               "forced_eos_token_id",
                                               "remove_invalid_values",
                                               "exponential_decay_length_penalty",
                                               "suppress_tokens",
                                               "begin_suppress_tokens",
                                               "_attn_implementation",
                                               "_attn_implementation_autoset",
                                               "attn_implementation",
                                               "cross_attention_hidden_size",
                                               "gradient_checkpointing",
                                               "initializer_range"};
  return fields;
}

std::string type_name(const nlohmann::json& j) {
  if (j.is_number_integer()) return "an integer";
  if (j.is_number()) return "a number";
  if (j.is_boolean()) return "a boolean";
  if (j.is_string()) return "a string";
  if (j.is_array()) return "a list";
  if (j.is_object()) return "an object";
  return "null";
}

}  // namespace

ConfigReader::ConfigReader(nlohmann::json json, std::string source)
    : json_(std::move(json)), source_(std::move(source)) {
  LORA_CHECK(json_.is_object(), "config {}: expected a JSON object, got {}", source_, type_name(json_));
  // Fields that would turn the model into something else: refused unless they say "no".
  for (const char* key : {"is_encoder_decoder", "add_cross_attention"}) {
    if (has(key)) {
      LORA_CHECK(json_[key].is_boolean() && !json_[key].get<bool>(),
                 "config {}: '{}' = {} is not supported (a decoder-only causal LM is expected)", source_, key,
                 json_[key].dump());
    }
    read_.insert(key);
  }
  if (has("pruned_heads")) {
    LORA_CHECK(json_["pruned_heads"].is_object() && json_["pruned_heads"].empty(),
               "config {}: 'pruned_heads' = {} is not supported (pruned attention heads)", source_,
               json_["pruned_heads"].dump());
  }
  read_.insert("pruned_heads");
}

ConfigReader ConfigReader::from_file(const std::string& path) {
  std::ifstream in(path);
  LORA_CHECK(in.good(), "cannot open config '{}'", path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    LORA_FAIL("config '{}' is not valid JSON: {}", path, e.what());
  }
  return ConfigReader(std::move(j), "'" + path + "'");
}

bool ConfigReader::has(const std::string& key) const {
  return json_.contains(key) && !json_[key].is_null();
}

void ConfigReader::fail(const std::string& key, const std::string& message) const {
  LORA_FAIL("config {}: '{}' {}", source_, key, message);
}

const nlohmann::json* ConfigReader::field(const std::string& key) {
  read_.insert(key);
  return has(key) ? &json_[key] : nullptr;
}

int64_t ConfigReader::integer(const std::string& key, int64_t fallback, int64_t min, int64_t max) {
  const nlohmann::json* j = field(key);
  if (!j) return fallback;
  // Integral floats (2048.0) appear in hand-edited configs; anything with a fraction is refused.
  const bool integral = j->is_number_integer() ||
                        (j->is_number_float() && std::isfinite(j->get<double>()) &&
                         std::floor(j->get<double>()) == j->get<double>() && std::abs(j->get<double>()) < 9.0e15);
  if (!integral) fail(key, fmt::format("must be an integer, got {} ({})", type_name(*j), j->dump()));
  const int64_t v = j->is_number_unsigned() && j->get<uint64_t>() > uint64_t(INT64_MAX) ? INT64_MAX
                    : j->is_number_float()                                              ? int64_t(j->get<double>())
                                                                                        : j->get<int64_t>();
  if (v < min || v > max) fail(key, fmt::format("= {} is outside [{}, {}]", j->dump(), min, max));
  return v;
}

int64_t ConfigReader::required_integer(const std::string& key, int64_t min, int64_t max) {
  if (!has(key)) fail(key, "is missing");
  return integer(key, 0, min, max);
}

double ConfigReader::number(const std::string& key, double fallback, double min, double max) {
  const nlohmann::json* j = field(key);
  if (!j) return fallback;
  if (!j->is_number()) fail(key, fmt::format("must be a number, got {} ({})", type_name(*j), j->dump()));
  const double v = j->get<double>();
  if (!std::isfinite(v) || v < min || v > max) fail(key, fmt::format("= {} is outside [{}, {}]", j->dump(), min, max));
  return v;
}

bool ConfigReader::boolean(const std::string& key, bool fallback) {
  const nlohmann::json* j = field(key);
  if (!j) return fallback;
  if (!j->is_boolean()) fail(key, fmt::format("must be true or false, got {} ({})", type_name(*j), j->dump()));
  return j->get<bool>();
}

std::string ConfigReader::string(const std::string& key, const std::string& fallback) {
  const nlohmann::json* j = field(key);
  if (!j) return fallback;
  if (!j->is_string()) fail(key, fmt::format("must be a string, got {} ({})", type_name(*j), j->dump()));
  return j->get<std::string>();
}

int64_t ConfigReader::token_id(const std::string& key, int64_t vocab_size) {
  const nlohmann::json* j = field(key);
  if (!j) return -1;
  const nlohmann::json& first = j->is_array() && !j->empty() ? (*j)[0] : *j;
  if (!first.is_number_integer()) fail(key, fmt::format("must be a token id or a list of them, got {}", j->dump()));
  const int64_t id = first.get<int64_t>();
  // transformers writes GPT-2's default 50256 even for smaller vocabularies: a token that cannot occur
  // marks nothing, exactly as in transformers, so it reads as none.
  return id >= 0 && id < vocab_size ? id : -1;
}

nlohmann::json ConfigReader::object(const std::string& key) {
  const nlohmann::json* j = field(key);
  if (!j) return nlohmann::json::object();
  if (!j->is_object()) fail(key, fmt::format("must be an object, got {} ({})", type_name(*j), j->dump()));
  return *j;
}

void ConfigReader::expect_one_of(const std::string& key, const std::vector<nlohmann::json>& accepted,
                                 const std::string& why) {
  const nlohmann::json* j = field(key);
  if (!j) return;
  for (const auto& a : accepted) {
    if (*j == a) return;
  }
  fail(key, fmt::format("= {} is not supported: {}", j->dump(), why));
}

void ConfigReader::finish() const {
  std::vector<std::string> unknown;
  for (const auto& [key, value] : json_.items()) {
    if (!read_.count(key) && !metadata_fields().count(key)) unknown.push_back(key);
  }
  if (unknown.empty()) return;
  std::string list;
  for (const auto& k : unknown) list += (list.empty() ? "'" : ", '") + k + "'";
  LORA_FAIL(
      "config {}: field{} {} {} not known to this implementation, which refuses fields it does not honour "
      "(remove {} if you know that {} not change the model)",
      source_, unknown.size() > 1 ? "s" : "", list, unknown.size() > 1 ? "are" : "is",
      unknown.size() > 1 ? "them" : "it", unknown.size() > 1 ? "they do" : "it does");
}

}  // namespace lora::models
