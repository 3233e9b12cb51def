// AddedVocabulary: tokenizer.json "added_tokens", found in the text before pre-tokenization.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lora::tokenizer::hf {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
  std::string pattern;  // what is matched: content, or its normalized form when `normalized`
};

// One part of a text: an added token (id >= 0) or text to tokenize (id -1), as byte offsets.
struct Segment {
  size_t start, end;
  int32_t id;
};

// Finds added tokens the way tokenizers' AddedVocabulary does (tokenizer/added_vocabulary.rs): the
// leftmost-longest non-overlapping occurrences of all patterns of the set, then, for each in turn:
// skipped when special and special tokens are not parsed, or when single_word and a word character
// (Unicode \w) touches it; lstrip widens it over the white space on its left (not before the previous
// token), rstrip over the white space on its right.
class AddedMatcher {
 public:
  AddedMatcher() = default;
  explicit AddedMatcher(std::vector<const AddedToken*> tokens);

  bool empty() const { return tokens_.empty(); }

  // Splits `text` into segments that cover it (segments of text may overlap a widened token, exactly
  // as in tokenizers). Empty text segments are left out.
  void split(std::string_view text, bool parse_special, std::vector<Segment>& out) const;

 private:
  struct Match {
    size_t start, end;
    const AddedToken* token;
  };
  void find_all(std::string_view text, std::vector<Match>& out) const;

  std::vector<const AddedToken*> tokens_;
  std::array<std::vector<const AddedToken*>, 256> by_first_byte_;  // longest pattern first
};

// Unicode White_Space (Rust's \s) and word characters (Rust's Unicode \w: Alphabetic, Mark,
// Decimal_Number, Connector_Punctuation, Join_Control), for code point `c`.
bool is_white_space(char32_t c);
bool is_word_char(char32_t c);

}  // namespace lora::tokenizer::hf
