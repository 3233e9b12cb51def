// Fuzzes loading GPT-2 tokenizer files: encoder.json (token -> id) and vocab.bpe (ranked merges), then
// encoding a fixed text with whatever tokenizer they make. Input: encoder.json, a separator, vocab.bpe.
#include "core/error.h"
#include "fuzz/fuzz_util.h"
#include "models/tokenizer/gpt2_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = lora::fuzz::split(data, size, "\n--VOCAB--\n");
  if (parts.size() != 2) return 0;
  lora::fuzz::MemoryFile encoder(parts[0]), vocab(parts[1]);
  try {
    const auto tokenizer = lora::tokenizer::GPT2Tokenizer::from_files(encoder.path(), vocab.path());
    try {
      const std::vector<int32_t> ids = tokenizer.encode("Hello world, it's 2026!\n  \t\xc3\xa9");
      (void)tokenizer.decode(ids);
    } catch (const lora::Error&) {  // a vocabulary may lack a byte: a clear error is the right answer
    }
  } catch (const lora::Error&) {
  }
  return 0;
}
