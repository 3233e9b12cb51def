// Fuzzes the GPT-2 tokenizer on arbitrary bytes: encoding (valid UTF-8 round-trips exactly; anything else
// is refused with an error) and decoding of arbitrary id sequences.
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "models/tokenizer/gpt2_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto tokenizer = lora::tokenizer::GPT2Tokenizer::load_default();
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    for (bool special : {false, true}) {
      const std::vector<int32_t> ids = tokenizer.encode(text, special);
      if (tokenizer.decode(ids) != text) std::abort();  // a lossless tokenizer: a mismatch is a finding
    }
  } catch (const lora::Error&) {
  }
  // The same bytes read as token ids (two bytes each), some out of range.
  std::vector<int32_t> ids(size / 2);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(data[2 * i] | (data[2 * i + 1] << 8)) - 1000;
  try {
    (void)tokenizer.decode(ids);
  } catch (const lora::Error&) {
  }
  return 0;
}
