// Which token ids end a generation, decided in one place for generate and serve: every end-of-sequence id
// the model's files name (config.json's eos_token_id, generation_config.json's, the tokenizer's eos_token)
// and, with a chat template, its end-of-turn marker when that is one added token (<|im_end|>, <|eot_id|>,
// <end_of_turn>), as llama.cpp stops on every end-of-generation token.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "models/causal_lm.h"
#include "models/chat/chat_template.h"
#include "models/tokenizer/tokenizer.h"

namespace lora::models {

// generation_config.json's eos_token_id: an id, a list of ids, null or absent; ids outside [0, vocab_size)
// are dropped (they cannot be sampled). `text` is the file's content, `origin` its path for messages. Throws
// lora::Error naming origin (with JSON's line and column) and the field for anything else.
std::vector<int64_t> read_generation_eos(const std::string& text, const std::string& origin, int64_t vocab_size);

// The folder of --weights: the folder itself, or a file's folder; "" for no weights (a random model).
std::string model_folder_of(const std::string& weights);
// The folder whose generation_config.json goes with the model: the one beside --config when that is a
// config.json path, else model_folder_of(weights).
std::string generation_config_folder(const std::string& weights, const std::string& config_arg);

// The end-of-turn marker of a chat template: what it writes right after an assistant message's content
// (leading whitespace skipped), when that begins with one special token of the tokenizer. nullopt when the
// template writes no such token there, or refuses the probe conversation (a user turn, an assistant turn).
std::optional<int32_t> end_of_turn_token(const chat::ChatTemplate& chat_template,
                                         const tokenizer::Tokenizer& tokenizer);

struct StopTokens {
  std::vector<int64_t> ids;  // sorted, unique, inside the model's vocabulary
  std::string why;           // for people: "50256 (config.json, tokenizer), 151645 <|im_end|> (chat template)"
};

// Every id that stops generation: the model's eos_token_ids() (config.json), the eos_token_id of
// generation_config.json in `config_folder` (when the file is there), the tokenizer's eos, and the end-of-turn
// token of `chat_template` (when given).
StopTokens stop_tokens(const CausalLM& model, const std::string& config_folder, const tokenizer::Tokenizer& tokenizer,
                       const chat::ChatTemplate* chat_template = nullptr);

}  // namespace lora::models
