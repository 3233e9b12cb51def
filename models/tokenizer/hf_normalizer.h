// Normalizer: the tokenizer.json "normalizer" (NFC, NFD, NFKC, NFKD, Prepend, Replace, Sequence).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "models/tokenizer/hf_regex.h"

namespace lora::tokenizer::hf {

class JsonView;

// Rewrites a piece of text as tokenizers' normalizer does. Unicode normalization uses utf8proc, whose
// tables (Unicode 15) are newer than those of tokenizers: characters assigned after about Unicode 11
// may normalize differently (docs/tokenizers.md lists how this was measured).
class Normalizer {
 public:
  enum class Kind { kNFC, kNFD, kNFKC, kNFKD, kPrepend, kReplace };

  // A normalizer from its JSON (a Sequence becomes its flattened steps). Unsupported types are refused.
  static Normalizer from_json(const JsonView& json);

  void normalize(std::string& text) const;
  bool empty() const { return steps_.empty(); }

 private:
  struct Step {
    Kind kind;
    std::string text;                  // Prepend: what to prepend; Replace: the replacement
    std::shared_ptr<Pattern> pattern;  // Replace
  };
  void add(const JsonView& json);
  std::vector<Step> steps_;
};

// Unicode normalization of valid UTF-8 (form: kNFC, kNFD, kNFKC or kNFKD).
std::string unicode_normalize(std::string_view text, Normalizer::Kind form);

}  // namespace lora::tokenizer::hf
