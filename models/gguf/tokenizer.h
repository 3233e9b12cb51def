// A tokenizer inside a GGUF file (tokenizer.ggml.*, tokenizer.chat_template) both ways, as llama.cpp's
// converter writes it for byte-level BPE tokenizers (tokenizer.ggml.model "gpt2": GPT-2, Llama 3, Qwen2,
// SmolLM): the token strings, their types, the merges, the special ids, add_bos, the pre-tokenizer by the
// name llama.cpp knows it under ("gpt-2", "llama-bpe", "qwen2", "smollm"), the chat template.
//
// Import builds the Hugging Face tokenizer.json those keys describe and reads it with HFTokenizer, so a
// GGUF model needs no tokenizer files beside it. Export reads tokenizer.json (and tokenizer_config.json)
// text. SentencePiece BPE vocabularies (tokenizer.ggml.model "llama": Llama 1/2, Mistral 7B v0.1, TinyLlama;
// in tokenizer.json, BPE with byte_fallback and U+2581 for spaces) go both ways too: merges derived from
// the scores on import, as transformers' LlamaConverter derives them; scores derived from the merges on
// export, as sentencepiece's BPE trainer gives them (docs/gguf.md).
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/gguf.h"
#include "models/tokenizer/tokenizer.h"

namespace lora::models::gguf_io {

// What a model folder's tokenizer files hold, as text.
struct TokenizerFiles {
  std::string tokenizer_json;         // a Hugging Face tokenizer.json
  std::string tokenizer_config_json;  // tokenizer_config.json, or ""
  std::string source;                 // for messages
};

// The tokenizer.* keys for a model of `vocab_size` ids (the vocabulary is padded with unused "[PADi]"
// tokens up to it, as the converter does). `config`: the model's config.json (bos/eos ids when the
// tokenizer files do not name them). Refuses a tokenizer llama.cpp would read differently, naming what.
std::vector<std::pair<std::string, gguf::Value>> tokenizer_to_gguf(const TokenizerFiles& files,
                                                                   const nlohmann::json& config, int64_t vocab_size);

// The tokenizer.json text and a tokenizer_config.json text (bos/eos, chat template) that a GGUF file's
// tokenizer.* keys describe. Throws naming the file and key when they are missing or not supported.
TokenizerFiles tokenizer_files_from_gguf(const gguf::File& file);

// The tokenizer of a GGUF model file (opened already, or by its path).
std::unique_ptr<tokenizer::Tokenizer> load_gguf_tokenizer(const gguf::File& file);
std::unique_ptr<tokenizer::Tokenizer> load_gguf_tokenizer(const std::string& path);

}  // namespace lora::models::gguf_io
