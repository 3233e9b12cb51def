// The OpenAI-compatible request bodies the server accepts, read strictly: a field of the wrong type, an
// unknown field or a value out of range is refused with an ApiError that names it, which the server
// answers as {"error": {"message", "type"}} with the error's HTTP status.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "models/chat/chat_template.h"
#include "serve/decode_engine.h"

namespace lora::serve {

struct ApiError : std::runtime_error {
  ApiError(int status, std::string type, const std::string& message)
      : std::runtime_error(message), status(status), type(std::move(type)) {}
  int status;
  std::string type;  // "invalid_request_error", "not_found_error", "rate_limit_error", "server_error", ...
};

// {"error": {"message": ..., "type": ..., "param": null, "code": null}}
nlohmann::json error_body(const std::string& type, const std::string& message);

// POST /v1/completions. The prompt is text (or token ids); `model` names an adapter or the base model.
struct CompletionRequest {
  std::string model;
  std::variant<std::string, std::vector<int32_t>> prompt;
  bool stream = false;
  RequestOptions options;
};

struct CompletionLimits {
  int64_t max_tokens = 4096;  // the largest max_tokens a request may ask for
};

// Parses and checks a request body; throws ApiError (status 400) naming the field at fault.
CompletionRequest parse_completion_request(const std::string& body, const CompletionLimits& limits);

// POST /v1/chat/completions: the same sampling fields and rules as /v1/completions (fields OpenAI defines
// accepted at their default value only, n = 1 for instance), `messages` in place of the prompt, and
// max_completion_tokens as another name of max_tokens.
struct ChatRequest {
  std::string model;
  chat::Conversation messages;
  bool stream = false;
  std::optional<int64_t> max_tokens;  // none: what the context leaves after the prompt, up to the limit
  RequestOptions options;             // options.max_tokens is set by the server from max_tokens
};
ChatRequest parse_chat_request(const std::string& body, const CompletionLimits& limits);

// OpenAI's messages: a non-empty list of {"role", "content"}, content a string or a list of
// {"type": "text", "text"} parts (joined with newlines, as vLLM does). Throws ApiError (400) naming the field
// ("messages[1].content[0].type") and what was expected.
chat::Conversation parse_messages(const nlohmann::json& messages);

// POST /v1/adapters: {"name": ..., "path": ...}
struct AdapterRequest {
  std::string name, path;
};
AdapterRequest parse_adapter_request(const std::string& body);

}  // namespace lora::serve
