// PreTokenizer: the GPT-2 pre-tokenizer regex, compiled and matched with PCRE2.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "models/tokenizer/pretokenizer.h"

#include <pcre2.h>

#include <memory>
#include <string>

#include "core/error.h"

namespace lora::tokenizer {

const char* const kGPT2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+)"
                                 R"(|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+)";

namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* md) const { pcre2_match_data_free(md); }
};

}  // namespace

PreTokenizer::PreTokenizer() {
  int error = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kGPT2Pattern), PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr);
  LORA_CHECK(code != nullptr, "GPT-2 pre-tokenizer regex: PCRE2 compile error at offset {}: {}", error_offset,
             pcre2_message(error));
  code_ = code;
  // The JIT is several times faster than the interpreter; without it (PCRE2 built without JIT, or an
  // unsupported CPU) matching still works, only slower.
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

PreTokenizer::~PreTokenizer() {
  pcre2_code_free(static_cast<pcre2_code*>(code_));
}

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& pieces) const {
  if (text.empty()) return;
  auto* code = static_cast<pcre2_code*>(code_);
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> match(pcre2_match_data_create_from_pattern(code, nullptr));
  LORA_CHECK(match != nullptr, "GPT-2 pre-tokenizer: out of memory for PCRE2 match data");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.get());

  size_t pos = 0;
  while (pos < text.size()) {
    const int rc = pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, match.get(), nullptr);
    // Letters, numbers, whitespace and [^\s\p{L}\p{N}] cover every character, so the pattern always
    // matches at `pos`: a failure here is a resource limit, never a gap.
    LORA_CHECK(rc > 0, "GPT-2 pre-tokenizer: PCRE2 match failed at byte offset {}: {}", pos, pcre2_message(rc));
    const size_t start = ovector[0], end = ovector[1];
    LORA_CHECK(start == pos && end > start, "GPT-2 pre-tokenizer: no piece at byte offset {}", pos);
    pieces.emplace_back(text.data() + start, end - start);
    pos = end;
  }
}

}  // namespace lora::tokenizer
