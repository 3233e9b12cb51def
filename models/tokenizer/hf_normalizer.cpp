// Normalizer: Unicode normal forms (utf8proc), Prepend, Replace and Sequence, as tokenizers applies them.
#include "models/tokenizer/hf_normalizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <iterator>
#include <utility>

#include "core/error.h"
#include "models/tokenizer/byte_unicode.h"
#include "models/tokenizer/hf_json.h"

namespace lora::tokenizer::hf {

namespace {

// The characters that normalize differently in utf8proc (Unicode 15) and in tokenizers, whose tables
// (the unicode-normalization-alignments crate) are about Unicode 9: to tokenizers they are unassigned,
// so they have no decomposition, combining class 0 and no composition. Found by comparing the two on
// every code point in all four forms, on every combining mark between two others, and on every
// two-character canonical composition; tests/fixtures/tokenizers/normalization.json keeps the
// comparison. Characters assigned after Unicode 9 that normalize as unassigned ones anyway are not
// listed.
constexpr std::array<std::pair<char32_t, char32_t>, 48> kUnknownToTokenizers = {{
    {0x7FD, 0x7FD},     {0x898, 0x89F},     {0x8CA, 0x8D3},     {0x9FE, 0x9FE},     {0xC3C, 0xC3C},
    {0xD3B, 0xD3C},     {0xEBA, 0xEBA},     {0x1715, 0x1715},   {0x1ABF, 0x1ACE},   {0x1DF6, 0x1DFA},
    {0x32FF, 0x32FF},   {0xA7F2, 0xA7F4},   {0xA82C, 0xA82C},   {0xAB69, 0xAB69},   {0x10781, 0x10785},
    {0x10787, 0x107B0}, {0x107B2, 0x107BA}, {0x10D24, 0x10D27}, {0x10EAB, 0x10EAC}, {0x10EFD, 0x10EFF},
    {0x10F46, 0x10F50}, {0x10F82, 0x10F85}, {0x11070, 0x11070}, {0x1133B, 0x1133B}, {0x1145E, 0x1145E},
    {0x11839, 0x1183A}, {0x11930, 0x11930}, {0x11935, 0x11935}, {0x11938, 0x11938}, {0x1193D, 0x1193E},
    {0x11943, 0x11943}, {0x119E0, 0x119E0}, {0x11A34, 0x11A34}, {0x11A47, 0x11A47}, {0x11A99, 0x11A99},
    {0x11D42, 0x11D42}, {0x11D44, 0x11D45}, {0x11D97, 0x11D97}, {0x11F41, 0x11F42}, {0x16FF0, 0x16FF1},
    {0x1E030, 0x1E06D}, {0x1E08F, 0x1E08F}, {0x1E130, 0x1E136}, {0x1E2AE, 0x1E2AE}, {0x1E2EC, 0x1E2EF},
    {0x1E4EC, 0x1E4EF}, {0x1F16C, 0x1F16C}, {0x1FBF0, 0x1FBF9},
}};

bool unknown_to_tokenizers(char32_t c) {
  const auto it = std::upper_bound(kUnknownToTokenizers.begin(), kUnknownToTokenizers.end(), c,
                                   [](char32_t v, const std::pair<char32_t, char32_t>& r) { return v < r.first; });
  return it != kUnknownToTokenizers.begin() && c <= std::prev(it)->second;
}

std::string utf8proc_normalize(std::string_view text, int options) {
  if (text.empty()) return {};
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()), static_cast<utf8proc_ssize_t>(text.size()),
                   &out, static_cast<utf8proc_option_t>(options));
  LORA_CHECK(n >= 0, "Unicode normalization failed: {}", utf8proc_errmsg(n));
  std::string result(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
  std::free(out);
  return result;
}

}  // namespace

std::string unicode_normalize(std::string_view text, Normalizer::Kind form) {
  if (text.empty()) return {};
  int options = UTF8PROC_STABLE;
  switch (form) {
    case Normalizer::Kind::kNFC:
      options |= UTF8PROC_COMPOSE;
      break;
    case Normalizer::Kind::kNFD:
      options |= UTF8PROC_DECOMPOSE;
      break;
    case Normalizer::Kind::kNFKC:
      options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
      break;
    case Normalizer::Kind::kNFKD:
      options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
      break;
    default:
      LORA_FAIL("unicode_normalize: not a normal form");
  }
  // Pure ASCII is already in every normal form: skip the copy.
  bool ascii = true;
  for (const char c : text) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
  if (ascii) return std::string(text);
  // A character tokenizers does not know is, to it, a starter that neither decomposes nor composes:
  // nothing reorders or composes across it, so the text on each side normalizes on its own and the
  // character stays as it is.
  std::string result;
  size_t start = 0;
  for (size_t pos = 0; pos < text.size();) {
    const size_t at = pos;
    if (!unknown_to_tokenizers(next_code_point(text, pos))) continue;
    result += utf8proc_normalize(text.substr(start, at - start), options);
    result.append(text.substr(at, pos - at));
    start = pos;
  }
  if (start == 0) return utf8proc_normalize(text, options);
  result += utf8proc_normalize(text.substr(start), options);
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
                      {},
                      nullptr});
  } else if (type == "Prepend") {
    json.only_fields({"type", "prepend"});
    steps_.push_back({Kind::kPrepend, json.field("prepend").string(), nullptr});
  } else if (type == "Replace") {
    json.only_fields({"type", "pattern", "content"});
    steps_.push_back({Kind::kReplace, json.field("content").string(),
                      std::make_shared<Pattern>(Pattern::from_json(json.field("pattern")))});
  } else {
    json.field("type").unsupported("normalizer type (supported: NFC, NFD, NFKC, NFKD, Prepend, Replace, Sequence)");
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
