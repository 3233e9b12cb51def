// ConfigReader: strict, field-by-field reading of config.json.
#include "models/config_reader.h"

#include <cmath>

#include "core/error.h"
#include "core/json.h"

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

}  // namespace

ConfigReader::ConfigReader(nlohmann::json json, std::string source)
    : JsonObjectReader(std::move(json), "config " + source, &metadata_fields()), source_(std::move(source)) {
  // Fields that would turn the model into something else: refused unless they say "no".
  for (const char* key : {"is_encoder_decoder", "add_cross_attention"}) {
    if (has(key)) {
      LORA_CHECK(this->json()[key].is_boolean() && !this->json()[key].get<bool>(),
                 "config {}: '{}' = {} is not supported (a decoder-only causal LM is expected)", source_, key,
                 this->json()[key].dump());
    }
    mark_read(key);
  }
  if (has("pruned_heads")) {
    LORA_CHECK(this->json()["pruned_heads"].is_object() && this->json()["pruned_heads"].empty(),
               "config {}: 'pruned_heads' = {} is not supported (pruned attention heads)", source_,
               this->json()["pruned_heads"].dump());
  }
  mark_read("pruned_heads");
}

ConfigReader ConfigReader::from_file(const std::string& path) {
  return ConfigReader(read_json_file(path, "config"), "'" + path + "'");
}

int64_t ConfigReader::token_id(const std::string& key, int64_t vocab_size) {
  const nlohmann::json j = value(key);
  if (j.is_null()) return -1;
  const nlohmann::json& first = j.is_array() && !j.empty() ? j[0] : j;
  if (!first.is_number_integer()) fail(key, fmt::format("must be a token id or a list of them, got {}", j.dump()));
  const int64_t id = first.get<int64_t>();
  // transformers writes GPT-2's default 50256 even for smaller vocabularies: a token that cannot occur
  // marks nothing, exactly as in transformers, so it reads as none.
  return id >= 0 && id < vocab_size ? id : -1;
}

void ConfigReader::finish() const {
  JsonObjectReader::finish("(remove a field if you know that it does not change the model)");
}

}  // namespace lora::models
