// GPT2Tokenizer: GPT-2's byte-level BPE tokenizer (encoder.json + vocab.bpe), encode and decode.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "models/tokenizer/tokenizer.h"

namespace lora::tokenizer {

// Reproduces OpenAI's GPT-2 encoder.py (and tiktoken's "gpt2" encoding) token for token:
//   text --UTF-8 check--> pieces (the GPT-2 regex, see pretokenizer.h) --bytes--> BPE merges by rank
//   --> token ids (0..50256).
//
// Special token: "<|endoftext|>" (id 50256, eot_token()) is the only one. By default a literal
// "<|endoftext|>" in the text is encoded as ordinary text ([27, 91, 437, 1659, 5239, 91, 29]), as
// encoder.py does and as tiktoken does with encode(text, disallowed_special=()), so that user text can
// never inject a document boundary. Pass allow_special = true to encode each occurrence as 50256
// (tiktoken's allowed_special="all"); use that for text you produced yourself, e.g. documents joined
// with "<|endoftext|>". decode() always writes 50256 back as "<|endoftext|>".
//
// Errors (lora::Error): a missing or malformed file (the message names the path, and the line for
// vocab.bpe); encode() of text that is not valid UTF-8 (the message names the byte offset); decode()
// of an id outside 0..vocab_size()-1 (the message names the id).
//
// Thread safety: after construction every method is safe to call from several threads at once.
// encode() keeps a cache of piece -> token ids, guarded by a shared mutex (readers in parallel, a
// writer alone). The cache is bounded: it holds pieces of at most kMaxCachedPieceBytes bytes and is
// emptied when it reaches kMaxCacheEntries, so memory stays bounded on any input.
//
// As a Tokenizer (the interface that also serves tokenizer.json files): EncodeOptions'
// parse_special_tokens is allow_special (true by default there, as in Hugging Face tokenizers);
// add_special_tokens adds nothing (GPT-2 has no BOS/EOS template); "<|endoftext|>" is BOS, EOS and the
// only special token; decode() returns raw bytes as decode(ids) does; token strings use the
// bytes_to_unicode alphabet ("Ġthe").
class GPT2Tokenizer final : public Tokenizer {
 public:
  static constexpr size_t kMaxCacheEntries = size_t{1} << 18;
  static constexpr size_t kMaxCachedPieceBytes = 128;

  // Load encoder.json (token string -> id) and vocab.bpe (the ranked merges).
  static GPT2Tokenizer from_files(const std::filesystem::path& encoder_json_path,
                                  const std::filesystem::path& vocab_bpe_path);

  // Load encoder.json and vocab.bpe from default_dir().
  static GPT2Tokenizer load_default();

  // $LORA_TOKENIZER_DIR when set and not empty, else <LORA_SOURCE_DIR>/data/gpt2 while it exists, else the installed
  // <prefix>/share/lora/data/gpt2.
  static std::filesystem::path default_dir();

  GPT2Tokenizer(GPT2Tokenizer&&) noexcept;
  GPT2Tokenizer& operator=(GPT2Tokenizer&&) noexcept;
  ~GPT2Tokenizer() override;

  // Token ids of `text` (no BOS/EOS added). `text` must be valid UTF-8.
  std::vector<int32_t> encode(std::string_view text, bool allow_special = false) const;

  // The text of `ids`: the concatenated bytes of their tokens. A token can hold part of a multi-byte
  // character (emoji and CJK often take several tokens), so the result of an arbitrary id sequence,
  // e.g. a prefix of a generation, need not be valid UTF-8: decode() returns the raw bytes as they
  // are, without replacement characters. decode(encode(s)) == s for every valid UTF-8 string s.
  std::string decode(std::span<const int32_t> ids) const;

  // The raw bytes of one token (for streaming output); throws like decode() on a bad id.
  const std::string& token_bytes(int32_t id) const;

  int32_t eot_token() const;           // 50256, "<|endoftext|>"
  size_t vocab_size() const override;  // 50257
  size_t num_merges() const;           // 50000

  // The piece cache: its current size, and a way to empty it (benchmarks measure a cold cache).
  size_t cache_size() const;
  void clear_cache() const;

  // Tokenizer
  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options) const override;
  Encoding encode_with_offsets(std::string_view text, const EncodeOptions& options) const override;
  std::string decode(std::span<const int32_t> ids, const DecodeOptions& options) const override;
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::optional<std::string> id_to_token(int32_t id) const override;
  std::optional<int32_t> bos_id() const override { return eot_token(); }
  std::optional<int32_t> eos_id() const override { return eot_token(); }
  bool is_special(int32_t id) const override { return id == eot_token(); }
  std::string describe() const override;

 private:
  struct Impl;
  explicit GPT2Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lora::tokenizer
