// Fuzzes the llm.c token-file reader (header, version, count against the file's size, token widths).
#include "core/error.h"
#include "fuzz/fuzz_util.h"
#include "train/token_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lora::fuzz::MemoryFile file(data, size);
  try {
    const std::vector<int32_t> tokens = lora::train::read_llmc_tokens(file.path());
    for (int32_t t : tokens) {
      if (t < 0) std::abort();  // ids are never negative
    }
  } catch (const lora::Error&) {
  }
  return 0;
}
