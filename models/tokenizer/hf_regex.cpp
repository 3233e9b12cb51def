// Pattern: Oniguruma-to-PCRE2 translation, compilation with limits, and the match loop.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "models/tokenizer/hf_regex.h"

#include <pcre2.h>

#include "core/error.h"
#include "models/tokenizer/byte_unicode.h"
#include "models/tokenizer/hf_json.h"

namespace lora::tokenizer::hf {

namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_ascii_letter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
char lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

// ---------------------------------------------------------------------------------------------------
// Oniguruma -> PCRE2

class Translator {
 public:
  Translator(std::string_view p, std::string_view where) : p_(p), where_(where) {}

  std::string run() {
    groups_.push_back({false, kNone});
    while (i_ < p_.size()) {
      if (in_class_)
        class_char();
      else
        outside_char();
    }
    if (in_class_) refuse("an unterminated character class");
    return out_;
  }

 private:
  static constexpr char kNone = 0;     // no literal letter before
  static constexpr char kUnknown = 1;  // something that may end in any letter (a closed group)
  struct Group {
    bool caseless_before;  // the caseless state to restore at ')'
    char prev_at_open;     // the letter before the group, which starts each alternative
  };

  [[noreturn]] void refuse(std::string_view what) const {
    LORA_FAIL(
        "{}: not supported: the regex {} (at byte {} of \"{}\"): Oniguruma, which tokenizers uses, and "
        "PCRE2 would match it differently",
        where_, what, i_, p_);
  }

  // A letter pair that Oniguruma's case-insensitive matching could match against one character
  // (ß ẞ -> ss, ﬅ ﬆ -> st, ﬀ -> ff, ﬁ -> fi, ﬂ -> fl); PCRE2 folds one character to one character.
  static bool folding_pair(char a, char b) {
    a = lower(a), b = lower(b);
    return (a == 's' && (b == 's' || b == 't')) || (a == 'f' && (b == 'f' || b == 'i' || b == 'l'));
  }

  // A literal character `c` (ASCII) just written outside a class: case-insensitive checks.
  void literal(char c) {
    if (!caseless_) {
      prev_ = kNone;
      return;
    }
    if (is_ascii_letter(c)) {
      if (prev_ == kUnknown &&
          (lower(c) == 's' || lower(c) == 't' || lower(c) == 'f' || lower(c) == 'i' || lower(c) == 'l'))
        refuse("has a case-insensitive letter after a group");
      if (prev_ != kNone && prev_ != kUnknown && folding_pair(prev_, c))
        refuse("has a case-insensitive letter pair that folds from one character");
      prev_ = c;
    } else {
      prev_ = kNone;
    }
  }

  void quantifier(char q) {
    if (caseless_ && q != '?') {
      if (prev_ != kNone) refuse("repeats a case-insensitive letter or group");
    }
    if (q != '?') prev_ = caseless_ ? kUnknown : kNone;
  }

  void outside_char() {
    const char c = p_[i_];
    if (c == '\\') return escape(false);
    if (c == '[') {
      if (caseless_) refuse("has a character class in a case-insensitive part");
      in_class_ = true;
      out_ += c;
      ++i_;
      if (i_ < p_.size() && p_[i_] == '^') out_ += p_[i_++];
      if (i_ < p_.size() && p_[i_] == ']') refuse("has a class that starts with ']'");
      return;
    }
    if (c == '(') return open_group();
    if (c == ')') {
      if (groups_.size() < 2) refuse("has an unbalanced ')'");
      caseless_ = groups_.back().caseless_before;
      groups_.pop_back();
      prev_ = caseless_ ? kUnknown : kNone;
      out_ += c;
      ++i_;
      return;
    }
    if (c == '|') {
      prev_ = groups_.back().prev_at_open;
      out_ += c;
      ++i_;
      return;
    }
    if (c == '*' || c == '+' || c == '?') {
      out_ += c;
      ++i_;
      // Lazy and possessive forms (*? *+ ...) mean the same in both engines.
      if (i_ < p_.size() && (p_[i_] == '?' || p_[i_] == '+')) out_ += p_[i_++];
      return quantifier(c);
    }
    if (c == '{') return interval();
    if (static_cast<unsigned char>(c) >= 0x80) {
      if (caseless_) refuse("has a non-ASCII character in a case-insensitive part");
      // Copy the whole UTF-8 character.
      size_t n = 1;
      while (i_ + n < p_.size() && (static_cast<unsigned char>(p_[i_ + n]) & 0xC0) == 0x80) ++n;
      out_.append(p_.substr(i_, n));
      i_ += n;
      prev_ = kNone;
      return;
    }
    out_ += c;
    ++i_;
    if (c == '.' || c == '^' || c == '$')
      prev_ = caseless_ ? kUnknown : kNone;
    else
      literal(c);
  }

  // {n} {n,} {n,m} are the same in both; Oniguruma's {,n} is {0,n} (PCRE2 10.42 reads it as text).
  void interval() {
    size_t j = i_ + 1;
    bool digits_before = false, comma = false, digits_after = false;
    while (j < p_.size() && is_digit(p_[j])) ++j, digits_before = true;
    if (j < p_.size() && p_[j] == ',') {
      comma = true;
      ++j;
      while (j < p_.size() && is_digit(p_[j])) ++j, digits_after = true;
    }
    if (j >= p_.size() || p_[j] != '}' || (!digits_before && !digits_after))
      refuse("has a '{' that is not a repetition count (write \\{ for the character)");
    std::string_view body = p_.substr(i_ + 1, j - i_ - 1);
    out_ += '{';
    if (!digits_before && comma) out_ += '0';
    out_.append(body);
    out_ += '}';
    i_ = j + 1;
    if (i_ < p_.size() && p_[i_] == '+') refuse("has a '+' after a repetition count");
    if (i_ < p_.size() && p_[i_] == '?') out_ += p_[i_++];
    quantifier('{');
  }

  void open_group() {
    out_ += '(';
    ++i_;
    bool caseless_next = caseless_;
    if (i_ < p_.size() && p_[i_] == '?') {
      const std::string_view rest = p_.substr(i_ + 1);
      if (rest.starts_with(":") || rest.starts_with("=") || rest.starts_with("!") || rest.starts_with("<=") ||
          rest.starts_with("<!") || rest.starts_with(">")) {
        // non-capturing group or lookaround: copied as is below
      } else if (rest.starts_with("<") || rest.starts_with("'")) {
        // named group: copy the name
        const char close = rest[0] == '<' ? '>' : '\'';
        const size_t end = rest.find(close, 1);
        if (end == std::string_view::npos) refuse("has an unterminated group name");
        out_.append(p_.substr(i_, end + 2));
        i_ += end + 2;
        groups_.push_back({caseless_, prev_});
        return;
      } else if (rest.starts_with("#")) {
        const size_t end = p_.find(')', i_);
        if (end == std::string_view::npos) refuse("has an unterminated comment");
        out_.pop_back();  // drop the '(' written above
        i_ = end + 1;
        return;
      } else {
        // Inline options: only i and -i.
        size_t j = 0;
        bool on = true, seen = false;
        while (j < rest.size() && (rest[j] == 'i' || rest[j] == '-')) {
          if (rest[j] == '-')
            on = false;
          else
            caseless_next = on, seen = true;
          ++j;
        }
        if (!seen || j >= rest.size() || (rest[j] != ')' && rest[j] != ':'))
          refuse("has an inline option or group kind other than (?i) (?-i) (?: (?= (?! (?<= (?<! (?> (?<name>");
        out_ += '?';
        out_.append(rest.substr(0, j + 1));
        i_ += 1 + j + 1;
        if (!caseless_ && caseless_next) prev_ = kNone;  // case-sensitive letters before do not fold
        if (rest[j] == ')') {                            // (?i) or (?-i): applies to the rest of the enclosing group
          caseless_ = caseless_next;
          return;
        }
        groups_.push_back({caseless_, prev_});
        caseless_ = caseless_next;
        return;
      }
      out_ += '?';
      ++i_;
      while (i_ < p_.size() && (p_[i_] == '<' || p_[i_] == '=' || p_[i_] == '!' || p_[i_] == ':' || p_[i_] == '>'))
        out_ += p_[i_++];
    }
    groups_.push_back({caseless_, prev_});
  }

  // `\` + the next character, inside or outside a class.
  void escape(bool in_class) {
    if (i_ + 1 >= p_.size()) refuse("ends with a lone '\\'");
    const char e = p_[i_ + 1];
    i_ += 2;
    switch (e) {
      case 's':
        out_ += "\\p{White_Space}";
        return after_escape(in_class);
      case 'S':
        out_ += "\\P{White_Space}";
        return after_escape(in_class);
      case 'v':
        out_ += "\\x{0B}";
        return after_escape(in_class);
      case 'd':
      case 'D':
        return property(in_class, e == 'D', "Nd", "\\d");
      case 'A':
      case 'z':
      case 'Z':
      case 't':
      case 'n':
      case 'r':
      case 'f':
      case 'a':
      case 'e':
        out_ += '\\';
        out_ += e;
        return after_escape(in_class);
      case 'u': {
        if (i_ + 4 > p_.size() || !is_hex(p_[i_]) || !is_hex(p_[i_ + 1]) || !is_hex(p_[i_ + 2]) || !is_hex(p_[i_ + 3]))
          refuse("has a \\u that is not followed by four hex digits");
        out_ += "\\x{";
        out_.append(p_.substr(i_, 4));
        out_ += '}';
        i_ += 4;
        return after_escape(in_class);
      }
      case 'x': {
        out_ += "\\x";
        if (i_ < p_.size() && p_[i_] == '{') {
          const size_t end = p_.find('}', i_);
          if (end == std::string_view::npos) refuse("has an unterminated \\x{");
          for (size_t k = i_ + 1; k < end; ++k)
            if (!is_hex(p_[k])) refuse("has a \\x{...} with a non-hex digit");
          out_.append(p_.substr(i_, end - i_ + 1));
          i_ = end + 1;
        } else {
          size_t k = 0;
          while (k < 2 && i_ < p_.size() && is_hex(p_[i_])) out_ += p_[i_++], ++k;
          if (k == 0) refuse("has a \\x without hex digits");
        }
        return after_escape(in_class);
      }
      case 'p':
      case 'P': {
        if (caseless_ && !in_class) refuse("has a \\p property in a case-insensitive part");
        if (i_ >= p_.size() || p_[i_] != '{') refuse("has a \\p without {name}");
        const size_t end = p_.find('}', i_);
        if (end == std::string_view::npos) refuse("has an unterminated \\p{");
        std::string_view name = p_.substr(i_ + 1, end - i_ - 1);
        bool negated = e == 'P';
        if (name.starts_with('^')) negated = !negated, name.remove_prefix(1);
        i_ = end + 1;
        return property(in_class, negated, name, "\\p{" + std::string(name) + "}");
      }
      default:
        break;
    }
    if (is_ascii_letter(e) || is_digit(e))
      refuse(fmt::format("has the escape \\{}, whose meaning differs or is not supported", e));
    if (static_cast<unsigned char>(e) >= 0x80) refuse("escapes a non-ASCII character");
    // An escaped ASCII punctuation character or space: a literal in both engines.
    out_ += '\\';
    out_ += e;
    if (!in_class) literal(e);
  }

  // A general category (or \\d, which is Nd): the PCRE2 class `pcre2` plus the characters Unicode 15-16
  // added to it. Negated inside a class, a non-empty supplement cannot be written: refused.
  void property(bool in_class, bool negated, std::string_view category, const std::string& pcre2) {
    const auto extra = property_supplement(category);
    if (!extra)
      refuse(
          fmt::format("uses the property {} (only the general categories L Lu Ll Lt Lm Lo M Mc Me N Nd Nl No "
                      "P* S* Z* are supported, with Oniguruma's Unicode 16 tables)",
                      pcre2));
    if (extra->empty()) {
      out_ += negated ? (pcre2 == "\\d" ? std::string("\\D") : "\\P" + pcre2.substr(2)) : pcre2;
    } else if (in_class) {
      if (negated) refuse("negates a property inside a class");
      out_ += pcre2;
      out_.append(*extra);
    } else {
      out_ += negated ? "[^" : "[";
      out_ += pcre2;
      out_.append(*extra);
      out_ += ']';
    }
    after_escape(in_class);
  }

  // After an escape that stands for a class or a non-letter: no letter before the next one.
  void after_escape(bool in_class) {
    if (!in_class) prev_ = kNone;
  }

  void class_char() {
    const char c = p_[i_];
    if (c == '\\') return escape(true);
    if (c == '[') refuse("has '[' inside a class (a nested class or POSIX bracket)");
    if (c == '&' && i_ + 1 < p_.size() && p_[i_ + 1] == '&') refuse("has a class intersection (&&)");
    if (c == ']') {
      in_class_ = false;
      out_ += c;
      ++i_;
      prev_ = kNone;
      return;
    }
    out_ += c;
    ++i_;
  }

  std::string_view p_;
  std::string_view where_;
  size_t i_ = 0;
  std::string out_;
  std::vector<Group> groups_;
  bool caseless_ = false;
  bool in_class_ = false;
  char prev_ = kNone;
};

struct MatchContextDeleter {
  void operator()(pcre2_match_context* c) const { pcre2_match_context_free(c); }
};
struct JitStackDeleter {
  void operator()(pcre2_jit_stack* s) const { pcre2_jit_stack_free(s); }
};

// One match context per thread: the match limit, and a JIT stack larger than the default 32 KiB so that
// long inputs to patterns with nested repetitions fail only on the match limit.
pcre2_match_context* thread_match_context() {
  thread_local std::unique_ptr<pcre2_jit_stack, JitStackDeleter> stack(
      pcre2_jit_stack_create(32 * 1024, 1 << 20, nullptr));
  thread_local std::unique_ptr<pcre2_match_context, MatchContextDeleter> context([] {
    pcre2_match_context* c = pcre2_match_context_create(nullptr);
    if (c != nullptr) {
      pcre2_set_match_limit(c, Pattern::kMatchLimit);
      pcre2_set_depth_limit(c, Pattern::kMatchLimit);
      if (stack) pcre2_jit_stack_assign(c, nullptr, stack.get());
    }
    return c;
  }());
  LORA_CHECK(context != nullptr, "regex: out of memory for a PCRE2 match context");
  return context.get();
}

}  // namespace

std::string onig_to_pcre2(std::string_view onig, std::string_view where) {
  return Translator(onig, where).run();
}

// ---------------------------------------------------------------------------------------------------
// Pattern

Pattern Pattern::from_json(const JsonView& pattern) {
  pattern.only_fields({"String", "Regex"});
  const std::string where = fmt::format("{}: {}", pattern.file(), pattern.path());
  if (auto s = pattern.optional("String")) {
    if (pattern.optional("Regex")) pattern.fail("expected one of String or Regex");
    const std::string text = s->string();
    if (text.empty()) s->unsupported("an empty pattern (tokenizers mis-splits it)");
    return literal(text, where + ".String");
  }
  if (auto r = pattern.optional("Regex")) return regex(r->string(), where + ".Regex");
  pattern.fail("expected {\"String\": ...} or {\"Regex\": ...}");
}

Pattern Pattern::literal(std::string text, std::string where) {
  LORA_CHECK(!text.empty(), "{}: not supported: an empty pattern", where);
  Pattern p;
  p.literal_ = std::move(text);
  p.where_ = std::move(where);
  return p;
}

Pattern Pattern::regex(std::string_view onig, std::string where) {
  LORA_CHECK(onig.size() <= kMaxPatternBytes, "{}: not supported: a regex of {} bytes (the limit is {})", where,
             onig.size(), kMaxPatternBytes);
  LORA_CHECK(find_invalid_utf8(onig) == std::string_view::npos, "{}: the regex is not valid UTF-8", where);
  const std::string translated = onig_to_pcre2(onig, where);
  return pcre2(translated, std::move(where));
}

Pattern Pattern::pcre2(const std::string& translated, std::string where) {
  pcre2_compile_context* context = pcre2_compile_context_create(nullptr);
  LORA_CHECK(context != nullptr, "{}: out of memory for a PCRE2 compile context", where);
  pcre2_set_newline(context, PCRE2_NEWLINE_LF);  // Oniguruma's only line end
  int error = 0;
  PCRE2_SIZE offset = 0;
  // MULTILINE: ^ and $ are line anchors in Oniguruma's syntax.
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE | PCRE2_NEVER_BACKSLASH_C, &error, &offset, context);
  pcre2_compile_context_free(context);
  LORA_CHECK(code != nullptr, "{}: the regex does not compile (PCRE2, at offset {} of \"{}\"): {}", where, offset,
             translated, pcre2_message(error));
  uint32_t min_length = 0;
  pcre2_pattern_info(code, PCRE2_INFO_MINLENGTH, &min_length);
  if (min_length == 0) {
    pcre2_code_free(code);
    LORA_FAIL("{}: not supported: the regex (PCRE2 form \"{}\") can match the empty string", where, translated);
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // without a JIT, matching is slower but the same
  Pattern p;
  p.where_ = std::move(where);
  p.code_ = code;
  return p;
}

Pattern::Pattern(Pattern&& o) noexcept
    : literal_(std::move(o.literal_)), where_(std::move(o.where_)), code_(std::exchange(o.code_, nullptr)) {}

Pattern& Pattern::operator=(Pattern&& o) noexcept {
  if (this != &o) {
    pcre2_code_free(static_cast<pcre2_code*>(code_));
    literal_ = std::move(o.literal_);
    where_ = std::move(o.where_);
    code_ = std::exchange(o.code_, nullptr);
  }
  return *this;
}

Pattern::~Pattern() {
  pcre2_code_free(static_cast<pcre2_code*>(code_));
}

void Pattern::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  Matcher matcher(*this, text);
  for (size_t start, end; matcher.next(start, end);) out.emplace_back(start, end);
}

Pattern::Matcher::Matcher(const Pattern& pattern, std::string_view text) : pattern_(pattern), text_(text) {
  if (pattern.code_ == nullptr) return;
  match_data_ = pcre2_match_data_create_from_pattern(static_cast<pcre2_code*>(pattern.code_), nullptr);
  LORA_CHECK(match_data_ != nullptr, "{}: out of memory for PCRE2 match data", pattern.where_);
}

Pattern::Matcher::~Matcher() {
  pcre2_match_data_free(static_cast<pcre2_match_data*>(match_data_));
}

bool Pattern::Matcher::next(size_t& start, size_t& end) {
  if (pos_ >= text_.size()) return false;
  if (pattern_.code_ == nullptr) {
    const size_t hit = text_.find(pattern_.literal_, pos_);
    if (hit == std::string_view::npos) {
      pos_ = text_.size();
      return false;
    }
    start = hit;
    end = pos_ = hit + pattern_.literal_.size();
    return true;
  }
  auto* match = static_cast<pcre2_match_data*>(match_data_);
  const int rc = pcre2_match(static_cast<pcre2_code*>(pattern_.code_), reinterpret_cast<PCRE2_SPTR>(text_.data()),
                             text_.size(), pos_, PCRE2_NO_UTF_CHECK, match, thread_match_context());
  if (rc == PCRE2_ERROR_NOMATCH) {
    pos_ = text_.size();
    return false;
  }
  LORA_CHECK(rc > 0, "{}: matching the regex failed at byte offset {} of a {}-byte piece of text: {}", pattern_.where_,
             pos_, text_.size(), pcre2_message(rc));
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match);
  start = ovector[0];
  end = ovector[1];
  // \K or a lookbehind could report a match that ends before it starts; the minimum length rules out
  // empty matches, so the loop always advances.
  LORA_CHECK(end > start && start >= pos_, "{}: the regex made an empty or backward match at byte offset {}",
             pattern_.where_, start);
  pos_ = end;
  return true;
}

}  // namespace lora::tokenizer::hf
