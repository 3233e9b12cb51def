// A token stream from raw text or an llm.c token file, split into training and held-out parts.
#include "train/token_stream.h"

#include "core/error.h"
#include "core/files.h"
#include "train/token_file.h"

namespace lora::train {

TokenSplit load_token_split(const std::string& path, const tokenizer::Tokenizer* tokenizer, double train_fraction) {
  LORA_CHECK(is_regular_file(path), "--data '{}': {}", path, not_a_file_reason(path));
  LORA_CHECK(train_fraction > 0 && train_fraction <= 1, "train fraction {} is outside (0, 1]", train_fraction);
  // A .bin without llm.c's magic is refused by the reader rather than read as text.
  if (has_llmc_magic(path) || path.ends_with(".bin")) return split_tokens(read_llmc_tokens(path), train_fraction);
  const std::string text = read_file(path, "--data");
  // Cut at a character boundary (a UTF-8 continuation byte starts 10xxxxxx).
  size_t cut = size_t(double(text.size()) * train_fraction);
  while (cut < text.size() && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) ++cut;
  LORA_CHECK(tokenizer != nullptr, "--data '{}': a text file needs a tokenizer", path);
  const tokenizer::EncodeOptions as_text{.add_special_tokens = false, .parse_special_tokens = false};
  TokenSplit split;
  try {
    split.train = tokenizer->encode(std::string_view(text).substr(0, cut), as_text);
    split.val = tokenizer->encode(std::string_view(text).substr(cut), as_text);
  } catch (const Error& e) {
    LORA_FAIL("--data '{}': {}", path, e.what());
  }
  return split;
}

}  // namespace lora::train
