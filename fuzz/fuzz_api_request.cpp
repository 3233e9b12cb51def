// Fuzzes the server's request bodies (serve/api_request.h): /v1/completions, /v1/chat/completions (messages,
// text parts, refused fields) and /v1/adapters, read strictly; and generation_config.json's eos_token_id
// (models/stop_tokens.h). Every refusal must be an ApiError or a lora::Error; nothing may crash or hang.
#include "core/error.h"
#include "models/stop_tokens.h"
#include "serve/api_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  const lora::serve::CompletionLimits limits{.max_tokens = 4096};
  try {
    (void)lora::serve::parse_completion_request(body, limits);
  } catch (const lora::serve::ApiError&) {
  }
  try {
    const lora::serve::ChatRequest r = lora::serve::parse_chat_request(body, limits);
    for (const auto& m : r.messages) (void)m.content.size();
  } catch (const lora::serve::ApiError&) {
  }
  try {
    (void)lora::serve::parse_adapter_request(body);
  } catch (const lora::serve::ApiError&) {
  }
  try {
    (void)lora::models::read_generation_eos(body, "fuzz", 1000);
  } catch (const lora::Error&) {
  }
  return 0;
}
