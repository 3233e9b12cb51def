// AddedMatcher: leftmost-longest search for added tokens and tokenizers' single_word/lstrip/rstrip rules.
#include "models/tokenizer/hf_added.h"

#include <algorithm>

#include "models/tokenizer/byte_unicode.h"
#include "models/tokenizer/hf_regex.h"

namespace lora::tokenizer::hf {

bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool is_word_char(char32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  // Rust's regex crate has Unicode 16 tables, PCRE2 10.42 Unicode 14: the letters, marks and digits
  // added since complete the class.
  static const Pattern word =
      Pattern::pcre2("[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}" + std::string(*property_supplement("L")) +
                         std::string(*property_supplement("M")) + std::string(*property_supplement("Nd")) + "]",
                     "the Unicode word-character class");
  std::string one;
  append_utf8(one, c);
  std::vector<std::pair<size_t, size_t>> found;
  word.find_all(one, found);
  return !found.empty();
}

namespace {

// The last code point of valid UTF-8 `s` (not empty).
char32_t last_code_point(std::string_view s) {
  size_t start = s.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  return next_code_point(s, start);
}

// Start of the white space that ends `s` (s.size() when none).
size_t trailing_space_start(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    size_t pos = start;
    if (!is_white_space(next_code_point(s, pos))) break;
    end = start;
  }
  return end;
}

// Length of the white space that starts `s`.
size_t leading_space_length(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    size_t next = pos;
    if (!is_white_space(next_code_point(s, next))) break;
    pos = next;
  }
  return pos;
}

}  // namespace

AddedMatcher::AddedMatcher(std::vector<const AddedToken*> tokens) : tokens_(std::move(tokens)) {
  for (const AddedToken* t : tokens_) by_first_byte_[static_cast<uint8_t>(t->pattern[0])].push_back(t);
  for (auto& bucket : by_first_byte_) {
    std::stable_sort(bucket.begin(), bucket.end(),
                     [](const AddedToken* a, const AddedToken* b) { return a->pattern.size() > b->pattern.size(); });
  }
}

void AddedMatcher::find_all(std::string_view text, std::vector<Match>& out) const {
  for (size_t pos = 0; pos < text.size();) {
    const auto& bucket = by_first_byte_[static_cast<uint8_t>(text[pos])];
    const AddedToken* found = nullptr;
    for (const AddedToken* t : bucket) {
      if (text.substr(pos).starts_with(t->pattern)) {
        found = t;  // the bucket is longest first: this is the longest match starting here
        break;
      }
    }
    if (found == nullptr) {
      ++pos;
      continue;
    }
    out.push_back({pos, pos + found->pattern.size(), found});
    pos += found->pattern.size();
  }
}

void AddedMatcher::split(std::string_view text, bool parse_special, std::vector<Segment>& out) const {
  if (text.empty()) return;
  std::vector<Match> matches;
  if (!tokens_.empty()) find_all(text, matches);
  size_t start_offset = 0;
  for (const Match& m : matches) {
    const AddedToken& token = *m.token;
    size_t start = m.start, stop = m.end;
    if (!parse_special && token.special) continue;
    if (token.single_word) {
      const bool start_space = start == 0 || !is_word_char(last_code_point(text.substr(0, start)));
      size_t after = stop;
      const bool stop_space = stop == text.size() || !is_word_char(next_code_point(text, after));
      if (!start_space || !stop_space) continue;
    }
    if (token.lstrip) start = std::max(trailing_space_start(text.substr(0, start)), start_offset);
    if (token.rstrip) stop += leading_space_length(text.substr(stop));
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, token.id});
    start_offset = stop;
  }
  if (start_offset != text.size()) out.push_back({start_offset, text.size(), -1});
}

}  // namespace lora::tokenizer::hf
