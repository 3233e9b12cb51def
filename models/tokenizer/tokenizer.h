// Tokenizer: the interface programs use for any tokenizer, its incremental decoder, and load_tokenizer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lora::tokenizer {

struct EncodeOptions {
  // Let the post-processor add its special tokens (Llama's BOS "<s>", RoBERTa's "<s>" ... "</s>"), as
  // Hugging Face tokenizers' encode(text, add_special_tokens=True) does. GPT-2 adds none.
  bool add_special_tokens = false;
  // Special tokens written in the text ("<|endoftext|>", "<s>", "<|im_start|>") become their ids, as
  // tokenizers does by default (and tiktoken with allowed_special="all"). false encodes them as plain
  // text, so that untrusted text cannot inject them (tokenizers' encode_special_tokens=True, tiktoken's
  // disallowed_special=()). Added tokens that are not special are matched either way.
  bool parse_special_tokens = true;
};

struct DecodeOptions {
  bool skip_special_tokens = false;  // leave out the special tokens (BOS, EOS, chat markers)
};

// Token ids with, for each, the byte offset in the encoded text where what it stands for begins (offsets are
// non-decreasing and at most the text's size).
struct Encoding {
  std::vector<int32_t> ids;
  std::vector<size_t> offsets;  // (ids.size())
};

// A tokenizer: text <-> token ids. Implemented by GPT2Tokenizer (OpenAI's GPT-2 files) and HFTokenizer
// (Hugging Face tokenizer.json). After construction every method is safe to call from several threads.
//
// Errors (lora::Error): encode() of text that is not valid UTF-8 (the message names the byte offset);
// decode() of an id that names no token.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text`, which must be valid UTF-8.
  virtual std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options) const = 0;

  // encode()'s ids (the same ones) and where each begins in `text`: what transformers' offset_mapping gives,
  // in bytes. A token made of whitespace that a normalizer or pre-tokenizer adds (Metaspace's "▁" at the
  // start) begins where the text it precedes begins; tokens the post-processor adds begin at 0 (before the
  // text) or at text.size() (after it). Under normalizers that change characters (NFKC and the like) an
  // offset can land a character or two early or late: the chat families' tokenizers have none.
  virtual Encoding encode_with_offsets(std::string_view text, const EncodeOptions& options) const = 0;

  // The text of `ids` as the tokenizer's own decoder writes it. Ids that end inside a multi-byte
  // character leave an incomplete character: HFTokenizer writes U+FFFD for it (as tokenizers does),
  // GPT2Tokenizer returns the raw bytes. For streaming, use IncrementalDecoder.
  virtual std::string decode(std::span<const int32_t> ids, const DecodeOptions& options) const = 0;

  // The vocabulary string of a token (e.g. "Ġthe" for GPT-2's " the", "▁the" for Llama-2's), and back.
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual std::optional<std::string> id_to_token(int32_t id) const = 0;

  // Number of ids: every id in 0..vocab_size()-1 names a token.
  virtual size_t vocab_size() const = 0;

  // Beginning and end of sequence, where the tokenizer's files define them.
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;

  // Whether `id` is a special token (skipped by DecodeOptions::skip_special_tokens).
  virtual bool is_special(int32_t id) const = 0;

  // One line for people: the kind of tokenizer and where it came from.
  virtual std::string describe() const = 0;
};

// Turns token ids into text as they arrive (generation), emitting text only once it is complete: a
// character split across tokens waits for its last byte, and a decoder that looks at neighbouring
// tokens (Llama's leading-space rule) sees them. It follows Hugging Face tokenizers' DecodeStream step
// for step: push() returns what tokenizers' step() returns (empty where it returns None).
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tokenizer, DecodeOptions options = {});

  // Add one id; returns the new text it completes (often empty).
  std::string push(int32_t id);

  // The text still held back (an incomplete character at the end of the stream: U+FFFD or raw bytes,
  // as decode() writes it). Call once at the end.
  std::string finish();

 private:
  const Tokenizer& tokenizer_;
  DecodeOptions options_;
  std::vector<int32_t> ids_;  // the ids since the last emitted prefix
  std::string prefix_;        // decode(ids_[0..prefix_index_))
  size_t prefix_index_ = 0;
};

// Loads a tokenizer from `path`, which may be:
//   - a tokenizer.json file (Hugging Face tokenizers; see hf_tokenizer.h for what is supported);
//   - a model folder holding tokenizer.json;
//   - a folder holding vocab.json + merges.txt (GPT-2 as transformers saves it) or encoder.json +
//     vocab.bpe (OpenAI's GPT-2 files, as in data/gpt2), read by GPT2Tokenizer.
// A tokenizer_config.json beside tokenizer.json supplies bos_token and eos_token. Throws lora::Error
// naming the path and what was looked for.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path);

}  // namespace lora::tokenizer
