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

// The tokenizer a program can know before it loads the model: --tokenizer, a GGUF file's own, or the files
// beside the weights; nullptr when only the model can tell (GPT-2's own files, for a GPT-2 model). Programs take
// it first: building one makes and frees tens of MB of small strings (GPT-2's 50,257 tokens and 50,000
// merges), and their heap pages are handed back (memory::trim_heap) before the model is loaded rather than
// staying resident beside it.
std::unique_ptr<tokenizer::Tokenizer> tokenizer_before_model(const std::string& weights,
                                                             const std::string& tokenizer_arg);

// `weights`: --weights (a folder, or a file whose folder is searched; "" for a random model).
// Throws lora::Error when there is no tokenizer for the model. (Ids a text encodes to are checked against
// the model's vocabulary where they are used.)
std::unique_ptr<tokenizer::Tokenizer> tokenizer_for_model(const models::CausalLM& model, const std::string& weights,
                                                          const std::string& tokenizer_arg);

// Whether a folder holds tokenizer files load_tokenizer reads.
bool has_tokenizer_files(const std::string& folder);

}  // namespace lora::tools
