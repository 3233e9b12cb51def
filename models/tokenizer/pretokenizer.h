// PreTokenizer: splits text into GPT-2's pre-token pieces with the GPT-2 regex (PCRE2, JIT-compiled).
#pragma once

#include <string_view>
#include <vector>

namespace lora::tokenizer {

// The GPT-2 pattern 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// with \s written as \p{White_Space}: PCRE2's \s also matches U+180E (Mongolian vowel separator),
// which Unicode's White_Space property, and so Python's `regex`, tiktoken and JavaScript, leave out.
// The letter and number classes follow PCRE2's Unicode tables (Unicode 14 for PCRE2 10.42), so
// characters assigned in later Unicode versions may split differently from a newer engine.
extern const char* const kGPT2Pattern;

class PreTokenizer {
 public:
  PreTokenizer();  // compiles kGPT2Pattern, with the JIT when PCRE2 has one
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Append to `pieces` the consecutive pieces that cover `text`, in order; they view into `text`.
  // `text` must be valid UTF-8 (the caller checks it once; PCRE2 is told not to check it again).
  // Thread-safe: the compiled pattern is read-only and each call has its own match data.
  void split(std::string_view text, std::vector<std::string_view>& pieces) const;

  bool jit() const { return jit_; }

 private:
  void* code_ = nullptr;  // pcre2_code*, kept opaque so that users of this header need no pcre2.h
  bool jit_ = false;
};

}  // namespace lora::tokenizer
