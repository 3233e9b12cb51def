// Fuzzes config.json reading for every architecture: strict JSON parsing (core/json.h), then the strict field-by-field
// reading (types, ranges, refused fields) of GPT-2's, the Llama family's and Gemma's configs. No model is built (sizes
// up to the bounds would allocate gigabytes); the reading alone must never crash, hang or accept nonsense.
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json.h"
#include "models/gemma/config.h"
#include "models/gpt2/config.h"
#include "models/llama/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json j;
  try {
    j = lora::parse_json(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  } catch (const lora::Error&) {
    return 0;
  }
  for (int kind = 0; kind < 3; ++kind) {
    try {
      if (kind == 0) {
        const auto c = lora::gpt2::GPT2Config::from_json(j, "fuzz");
        (void)c.to_json().dump();
      } else if (kind == 1) {
        const auto c = lora::llama::LlamaConfig::from_json(j, "fuzz");
        (void)c.to_json().dump();
      } else {
        const auto c = lora::gemma::GemmaConfig::from_json(j, "fuzz");
        (void)c.to_json().dump();
      }
    } catch (const lora::Error&) {
    }
  }
  return 0;
}
