// HFTokenizer: a BPE tokenizer read from a Hugging Face tokenizer.json, token for token like tokenizers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "models/tokenizer/tokenizer.h"

namespace lora::tokenizer {

// Encodes and decodes as Hugging Face tokenizers (Rust, 0.23) does with the same tokenizer.json:
//   text --added tokens (special ones unless parse_special_tokens=false)--> parts
//        --normalizer--> --added tokens matched on normalized text--> --pre-tokenizer--> pieces
//        --BPE model--> ids --post-processor (add_special_tokens)--> ids
// and ids --tokens (skip_special_tokens)--> --decoder--> text.
//
// Supported (docs/tokenizers.md has the details):
//   model: BPE with vocab and merges ("a b" strings or ["a", "b"] pairs), unk_token, fuse_unk,
//     byte_fallback, ignore_merges; dropout null or 0; continuing_subword_prefix and
//     end_of_word_suffix null or "".
//   normalizer: NFC, NFD, NFKC, NFKD, Prepend, Replace, Sequence.
//   pre_tokenizer: ByteLevel (last), Split, Metaspace, Sequence.
//   post_processor: TemplateProcessing, RobertaProcessing, BertProcessing, ByteLevel, Sequence.
//   decoder: ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence.
//   added_tokens: special, single_word, lstrip, rstrip, normalized.
// Anything else (another model type, an unknown component or field, truncation or padding, an option
// value not implemented) is refused with a lora::Error naming the file, the JSON path and the value.
//
// Differences from tokenizers, by design: decode() of an id that names no token throws (tokenizers
// drops it silently). Unicode tables: regexes use PCRE2's (Unicode 14), normalization utf8proc's
// (Unicode 15), where tokenizers uses Oniguruma's and older normalization tables: text with characters
// assigned in recent Unicode versions may split or normalize differently.
class HFTokenizer final : public Tokenizer {
 public:
  static constexpr size_t kMaxFileBytes = size_t{1} << 30;

  // Reads a tokenizer.json, and tokenizer_config.json beside it when there is one (for bos/eos).
  static HFTokenizer from_file(const std::filesystem::path& tokenizer_json);
  // From the text of a tokenizer.json; `name` stands for the file in messages. `config_json`: the text
  // of a tokenizer_config.json, or empty.
  static HFTokenizer from_json(std::string_view json, const std::string& name, std::string_view config_json = {});

  HFTokenizer(HFTokenizer&&) noexcept;
  HFTokenizer& operator=(HFTokenizer&&) noexcept;
  ~HFTokenizer() override;

  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options) const override;
  Encoding encode_with_offsets(std::string_view text, const EncodeOptions& options) const override;
  std::string decode(std::span<const int32_t> ids, const DecodeOptions& options) const override;
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::optional<std::string> id_to_token(int32_t id) const override;
  size_t vocab_size() const override;
  std::optional<int32_t> bos_id() const override;
  std::optional<int32_t> eos_id() const override;
  bool is_special(int32_t id) const override;
  std::string describe() const override;

  size_t model_vocab_size() const;  // ids 0..model_vocab_size()-1 are the model's; added tokens follow
  size_t num_merges() const;
  bool byte_level() const;  // the pre-tokenizer ends with ByteLevel

  // The BPE piece cache (as GPT2Tokenizer's): its size, and a way to empty it (benchmarks).
  size_t cache_size() const;
  void clear_cache() const;

 private:
  struct Impl;
  explicit HFTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The tokenizer.json that transformers' GPT-2 conversion makes from OpenAI's encoder.json and vocab.bpe
// (BPE, ByteLevel pre-tokenizer without prefix space, ByteLevel decoder and post-processor,
// "<|endoftext|>" as a special added token).
std::string gpt2_tokenizer_json(const std::filesystem::path& encoder_json, const std::filesystem::path& vocab_bpe);

}  // namespace lora::tokenizer
