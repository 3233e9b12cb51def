// Which tokenizer a program uses for a model: --tokenizer when given; else a GGUF model file's own tokenizer;
// else the tokenizer files in the model's folder (tokenizer.json, vocab.json + merges.txt); else, for a GPT-2 model
// only, GPT-2's own files in data/gpt2. A Llama-family model without a tokenizer is refused rather than given GPT-2's
// ids.
#pragma once

#include <memory>
#include <string>

#include "models/causal_lm.h"
#include "models/tokenizer/tokenizer.h"

namespace lora::tools {

// `weights`: --weights (a folder, or a file whose folder is searched; "" for a random model).
// Throws lora::Error when there is no tokenizer for the model. (Ids a text encodes to are checked against
// the model's vocabulary where they are used.)
std::unique_ptr<tokenizer::Tokenizer> tokenizer_for_model(const models::CausalLM& model, const std::string& weights,
                                                          const std::string& tokenizer_arg);

// Whether a folder holds tokenizer files load_tokenizer reads.
bool has_tokenizer_files(const std::string& folder);

}  // namespace lora::tools
