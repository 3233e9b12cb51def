// Pattern: a tokenizer.json pattern ({"String": ...} or {"Regex": ...}), matched like tokenizers does.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lora::tokenizer::hf {

class JsonView;

// tokenizers compiles its regexes with Oniguruma; this translates them to PCRE2 (JIT) and refuses
// what the two engines would match differently (see onig_to_pcre2). A String pattern is a literal.
// Character properties follow Oniguruma's Unicode 16 tables: PCRE2 10.42's Unicode 14 tables are
// completed with the characters added since (property_supplement).
//
// Matching is bounded: PCRE2's match limit (kMatchLimit backtracking steps per match) turns a
// pathological pattern into a lora::Error naming the pattern's place in the file, never a hang or a
// crash; patterns longer than kMaxPatternBytes are refused.
class Pattern {
 public:
  static constexpr uint32_t kMatchLimit = 10'000'000;
  static constexpr size_t kMaxPatternBytes = 16 * 1024;

  // {"String": "..."} or {"Regex": "..."}.
  static Pattern from_json(const JsonView& pattern);
  static Pattern literal(std::string text, std::string where);
  static Pattern regex(std::string_view onig, std::string where);       // `where` names it in errors
  static Pattern pcre2(const std::string& pattern, std::string where);  // PCRE2 syntax, not translated

  // Appends to `out` the non-overlapping matches in `text` (valid UTF-8), leftmost first, as byte
  // offsets [start, end); every match is non-empty.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;

  // The same matches one at a time, without collecting them.
  class Matcher {
   public:
    Matcher(const Pattern& pattern, std::string_view text);
    ~Matcher();
    Matcher(const Matcher&) = delete;
    Matcher& operator=(const Matcher&) = delete;
    bool next(size_t& start, size_t& end);  // false when there is no further match

   private:
    const Pattern& pattern_;
    std::string_view text_;
    size_t pos_ = 0;
    void* match_data_ = nullptr;  // pcre2_match_data*
  };

  bool is_literal() const { return code_ == nullptr; }
  const std::string& literal_text() const { return literal_; }

  Pattern(Pattern&&) noexcept;
  Pattern& operator=(Pattern&&) noexcept;
  ~Pattern();

 private:
  Pattern() = default;
  std::string literal_;
  std::string where_;
  void* code_ = nullptr;  // pcre2_code*, or null for a literal
};

// The PCRE2 form of an Oniguruma pattern as tokenizers compiles it (Oniguruma syntax, UTF-8, no
// options). Rewritten: \s \S (Oniguruma's \s is Unicode White_Space; PCRE2's also matches U+180E),
// \v (a vertical tab in Oniguruma, a class in PCRE2), \uHHHH, {,n}, \p{X} \P{X} \d \D (completed to
// Unicode 16). Only general categories are accepted as properties. Refused with a lora::Error that
// names `where`: escapes whose meaning differs (\h \H \w \W \b \B \R \X \K \G ...), nested classes and
// class intersections (&&), POSIX brackets, inline options other than i, and case-insensitive parts
// that Oniguruma's multi-character case folding could match differently (non-ASCII letters, classes,
// \p, repeated letters, and the letter pairs ss st ff fi fl, which fold from ß ﬅ ﬀ ﬁ ﬂ).
std::string onig_to_pcre2(std::string_view onig, std::string_view where);

// For a general category ("L", "Nd", ...): the characters that Unicode 15-16 added to it, as PCRE2 class
// ranges (possibly empty); nullopt for a property the translation refuses (hf_regex_tables.cpp).
std::optional<std::string_view> property_supplement(std::string_view category);

}  // namespace lora::tokenizer::hf
