// Fuzzes Hugging Face tokenizer.json loading (every model, normalizer, pre-tokenizer, post-processor and
// decoder it accepts) and then encoding and decoding with whatever tokenizer it makes. Input: the
// tokenizer.json text, optionally followed by a separator and a tokenizer_config.json, then optionally a
// second separator and a text to encode (a fixed text with special tokens, spaces and accents otherwise).
#include <cstdlib>

#include "core/error.h"
#include "fuzz/fuzz_util.h"
#include "models/tokenizer/hf_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = lora::fuzz::split(data, size, "\n--CONFIG--\n");
  if (parts.empty() || parts.size() > 2) return 0;
  std::string config;
  std::string text = "Hello world, it's 2026!\n  \t\xc3\xa9<s></s><|endoftext|>  x";
  if (parts.size() == 2) {
    const std::string separator = "\n--TEXT--\n";
    const size_t cut = parts[1].find(separator);
    config = parts[1].substr(0, cut);
    if (cut != std::string::npos) text = parts[1].substr(cut + separator.size());
  }
  try {
    const auto tokenizer = lora::tokenizer::HFTokenizer::from_json(parts[0], "fuzz tokenizer.json", config);
    for (bool special : {false, true}) {
      try {
        lora::tokenizer::EncodeOptions options;
        options.add_special_tokens = special;
        const std::vector<int32_t> ids = tokenizer.encode(text, options);
        const lora::tokenizer::Encoding with_offsets = tokenizer.encode_with_offsets(text, options);
        if (with_offsets.ids != ids || with_offsets.offsets.size() != ids.size()) std::abort();
        for (const size_t offset : with_offsets.offsets)
          if (offset > text.size()) std::abort();
        (void)tokenizer.decode(ids, {});
        (void)tokenizer.decode(ids, {.skip_special_tokens = true});
      } catch (const lora::Error&) {  // text that is not valid UTF-8, a vocabulary without a byte: a clear error
      }
    }
  } catch (const lora::Error&) {
  }
  return 0;
}
