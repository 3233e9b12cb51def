// HttpServer: the OpenAI-compatible HTTP front of a DecodeEngine (cpp-httplib).
//
//   POST   /v1/completions        {"model", "prompt", "max_tokens", "temperature", "top_p", "stop", "seed",
//                                  "stream"}: a completion, or with "stream": true server-sent events
//                                  (data: {...} chunks, then data: [DONE])
//   POST   /v1/chat/completions   {"model", "messages", ...}: the conversation rendered with the chat template
//                                  (add_generation_prompt), the reply up to the end-of-turn token; streamed
//                                  as chat.completion.chunk deltas (the role first)
//   GET    /v1/models             the base model and every loaded adapter ("model" picks one)
//   GET    /health                {"status": "ok", "active", "queued", ...}: the load
//   POST   /v1/adapters           {"name", "path"}: loads a PEFT adapter folder at run time
//   DELETE /v1/adapters/NAME      unloads it (its running requests end as cancelled)
//
// Every refusal is a 4xx/5xx with {"error": {"message", "type"}}: malformed JSON, wrong types, unknown
// fields, an unknown model, max_tokens over the limit, a prompt over the context (400/404); a body over
// the size limit (413); a full queue (429). The engine's slots bound the sequences decoded at once, its
// queue the requests waiting; HTTP worker threads are sized to hold both.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "models/chat/chat_template.h"

#include "models/tokenizer/tokenizer.h"
#include "serve/api_request.h"
#include "serve/decode_engine.h"

namespace lora::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                  // 0: any free port (start() returns it)
  std::string model_name = "base";  // the base model's id in /v1/models and in requests' "model"
  size_t max_body_bytes = 1 << 20;
  CompletionLimits limits;
  int http_threads = 0;  // 0: the engine's slots + queue + 4
  // The template of /v1/chat/completions (--chat-template, else the model folder's); null: an adapter's own
  // (set_chat_template, or its folder's when loaded through POST /v1/adapters), else chat requests are refused.
  std::shared_ptr<const chat::ChatTemplate> chat_template;
};

class HttpServer {
 public:
  HttpServer(DecodeEngine& engine, const tokenizer::Tokenizer& tokenizer, ServerOptions options);
  ~HttpServer();  // stops
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds, then serves and decodes on background threads; returns the port. Throws when it cannot bind.
  int start();
  void stop();

  // The chat template of an adapter's requests when options.chat_template is null (an adapter saved with
  // chat_template.jinja or tokenizer_config.json). Thread-safe.
  void set_chat_template(const std::string& adapter, std::shared_ptr<const chat::ChatTemplate> chat_template);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lora::serve
