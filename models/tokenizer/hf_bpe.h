// BpeModel: the tokenizer.json "model" of type BPE: vocabulary, merges, and the merge of one piece.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "models/tokenizer/bpe.h"

namespace lora::tokenizer::hf {

class JsonView;

// Lets maps keyed by std::string be searched with a string_view (no std::string built per lookup).
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// Reproduces tokenizers' BPE model (models/bpe/model.rs and word.rs): each character of a piece is a
// symbol (its vocabulary id; else its bytes as <0xNN> tokens with byte_fallback; else unk_token, fused
// when fuse_unk; else nothing), then adjacent pairs merge by rank, lowest rank and then leftmost first,
// with tokenizers' own rule for stale queue entries. ignore_merges: a piece that is itself in the
// vocabulary is that one token.
//
// Byte-level mode (the pre-tokenizer ends with ByteLevel): pieces are raw bytes and each byte is the
// character bytes_to_unicode gives it, so no mapped string is ever built.
//
// Refused (lora::Error naming the field): dropout other than null or 0, a non-empty
// continuing_subword_prefix or end_of_word_suffix, ids that are not 0..n-1 each once, a merge naming a
// token that is not in the vocabulary (or whose concatenation is not), a repeated merge, an unk_token
// that is not in the vocabulary.
class BpeModel {
 public:
  static constexpr size_t kMaxCacheEntries = size_t{1} << 18;
  static constexpr size_t kMaxCachedPieceBytes = 128;

  BpeModel(const JsonView& model, bool byte_level);
  BpeModel(BpeModel&&) = delete;

  // Appends the ids of one piece.
  void tokenize(std::string_view piece, std::vector<int32_t>& out) const;

  size_t size() const { return tokens_.size(); }
  const std::string& token(int32_t id) const { return tokens_[static_cast<size_t>(id)]; }
  std::optional<int32_t> find(std::string_view token) const;
  size_t num_merges() const { return merges_.size(); }

  size_t cache_size() const;
  void clear_cache() const;

 private:
  struct Symbol {
    int32_t id;
    int32_t prev, next;  // indices in the symbol list, -1 at the ends
    int32_t len;         // bytes covered; 0 once merged into the symbol on its left
  };
  void merge_word(std::string_view piece, std::vector<int32_t>& out) const;
  void merge_range(std::vector<Symbol>& symbols, int32_t begin, int32_t end) const;
  void add_char(std::string_view chr, int32_t id, std::vector<Symbol>& symbols,
                std::optional<std::pair<int32_t, int32_t>>& unk) const;

  std::vector<std::string> tokens_;  // (vocab) vocabulary string of each id
  StringMap ids_;                    // vocabulary string -> id
  MergeTable merges_;
  // Where a long piece can be cut: the pairs of characters that are adjacent in some vocabulary token,
  // and the first and last character of each token. A merge across two symbols makes a token holding
  // the last character of the left one next to the first of the right one; where that pair is in no
  // token, no merge ever crosses, and the two sides merge exactly as they would alone.
  MergeTable adjacent_chars_;
  std::vector<char32_t> first_char_, last_char_;
  bool can_cut_ = true;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  bool byte_fallback_ = false;
  std::array<int32_t, 256> fallback_ids_{};  // id of "<0xNN>" for byte NN, or -1
  std::vector<int32_t> bmp_ids_;             // (0x10000) id of the one-character token U+0000..U+FFFF, or -1

  bool byte_level_ = false;
  std::array<std::string, 256> byte_chars_;  // byte-level: the vocabulary character of each byte (UTF-8)
  std::array<int32_t, 256> byte_ids_{};      // byte-level: its id, or -1
  StringMap raw_ids_;                        // byte-level: raw bytes of a token -> id (for ignore_merges)

  mutable std::shared_mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace lora::tokenizer::hf
