// Normalizer: Unicode normal forms (utf8proc), Prepend, Replace and Sequence, as tokenizers applies them.
#include "models/tokenizer/hf_normalizer.h"

#include <utf8proc.h>

#include <cstdlib>

#include "core/error.h"
#include "models/tokenizer/hf_json.h"

namespace lora::tokenizer::hf {

std::string unicode_normalize(std::string_view text, Normalizer::Kind form) {
  if (text.empty()) return {};
  int options = UTF8PROC_STABLE;
  switch (form) {
    case Normalizer::Kind::kNFC: options |= UTF8PROC_COMPOSE; break;
    case Normalizer::Kind::kNFD: options |= UTF8PROC_DECOMPOSE; break;
    case Normalizer::Kind::kNFKC: options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    case Normalizer::Kind::kNFKD: options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
    default: LORA_FAIL("unicode_normalize: not a normal form");
  }
  // Pure ASCII is already in every normal form: skip the copy.
  bool ascii = true;
  for (const char c : text) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
  if (ascii) return std::string(text);
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                          static_cast<utf8proc_ssize_t>(text.size()), &out,
                                          static_cast<utf8proc_option_t>(options));
  LORA_CHECK(n >= 0, "Unicode normalization failed: {}", utf8proc_errmsg(n));
  std::string result(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
  std::free(out);
  return result;
}

Normalizer Normalizer::from_json(const JsonView& json) {
  Normalizer n;
  n.add(json);
  return n;
}

void Normalizer::add(const JsonView& json) {
  const std::string type = json.type();
  if (type == "Sequence") {
    json.only_fields({"type", "normalizers"});
    const JsonView list = json.field("normalizers");
    for (size_t i = 0; i < list.size(); ++i) add(list[i]);
  } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    json.only_fields({"type"});
    steps_.push_back({type == "NFC"    ? Kind::kNFC
                      : type == "NFD"  ? Kind::kNFD
                      : type == "NFKC" ? Kind::kNFKC
                                       : Kind::kNFKD,
                      {}, nullptr});
  } else if (type == "Prepend") {
    json.only_fields({"type", "prepend"});
    steps_.push_back({Kind::kPrepend, json.field("prepend").string(), nullptr});
  } else if (type == "Replace") {
    json.only_fields({"type", "pattern", "content"});
    steps_.push_back({Kind::kReplace, json.field("content").string(),
                      std::make_shared<Pattern>(Pattern::from_json(json.field("pattern")))});
  } else {
    json.field("type").unsupported(
        "normalizer type (supported: NFC, NFD, NFKC, NFKD, Prepend, Replace, Sequence)");
  }
}

void Normalizer::normalize(std::string& text) const {
  std::vector<std::pair<size_t, size_t>> matches;
  for (const Step& step : steps_) {
    switch (step.kind) {
      case Kind::kPrepend:
        if (!text.empty()) text.insert(0, step.text);
        break;
      case Kind::kReplace: {
        matches.clear();
        step.pattern->find_all(text, matches);
        if (matches.empty()) break;
        std::string out;
        out.reserve(text.size());
        size_t last = 0;
        for (const auto& [start, end] : matches) {
          out.append(text, last, start - last);
          out += step.text;
          last = end;
        }
        out.append(text, last);
        text = std::move(out);
        break;
      }
      default:
        text = unicode_normalize(text, step.kind);
        break;
    }
  }
}

}  // namespace lora::tokenizer::hf
