// Strict reading of the server's request bodies: types, ranges and unknown fields.
#include "serve/api_request.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "core/error.h"
#include "core/json.h"
#include "core/json_object_reader.h"

namespace lora::serve {
using json = nlohmann::json;

namespace {

[[noreturn]] void bad(const std::string& message) {
  throw ApiError(400, "invalid_request_error", message);
}

// The body, parsed strictly (core/json.h: duplicate keys, deep nesting and bad UTF-8 refused), as an object
// whose fields are read one by one; finish() then refuses any field left unread.
JsonObjectReader body_reader(const std::string& body) {
  json j;
  try {
    j = parse_json(body, "the body");
  } catch (const Error& e) {
    bad(e.what());
  }
  if (!j.is_object()) bad("the body must be a JSON object");
  return JsonObjectReader(std::move(j), "");
}

// Runs a reader's checks with its errors answered as 400s.
template <class F>
auto as_bad_request(F&& read) {
  try {
    return read();
  } catch (const ApiError&) {
    throw;
  } catch (const Error& e) {
    bad(e.what());
  }
}

}  // namespace

json error_body(const std::string& type, const std::string& message) {
  return {{"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}}}};
}

namespace {

// Fields OpenAI defines that change nothing here at their default value: other values are refused.
void accept_defaults(JsonObjectReader& r, const std::map<std::string, json>& at_default) {
  for (const auto& [key, value] : at_default) r.expect_one_of(key, {value}, fmt::format("only {} is", value.dump()));
}

std::string model_field(JsonObjectReader& r) {
  const json model = r.value("model");
  if (!model.is_string()) bad("'model' must be a string (an adapter's name, or the base model's)");
  return model.get<std::string>();
}

// The fields both kinds of request share: temperature, top_p, top_k, seed, stream, stop, user.
void read_sampling(JsonObjectReader& r, RequestOptions& o, bool& stream) {
  o.temperature = r.number("temperature", o.temperature, 0, 2);
  o.top_p = r.number("top_p", o.top_p, 0, 1);
  if (o.top_p == 0) bad("'top_p' must be above 0");
  o.top_k = r.integer("top_k", o.top_k, 0, 1 << 30);
  if (r.has("seed")) {
    o.seed = static_cast<uint64_t>(
        r.integer("seed", 0, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()));
  }
  stream = r.boolean("stream", stream);
  if (r.has("stop")) {
    const json s = r.value("stop");
    std::vector<std::string> stops;
    if (s.is_string())
      stops.push_back(s.get<std::string>());
    else if (s.is_array() && s.size() <= 4 &&
             std::all_of(s.begin(), s.end(), [](const json& x) { return x.is_string(); })) {
      for (const json& x : s) stops.push_back(x.get<std::string>());
    } else {
      bad("'stop' must be a string or a list of up to 4 strings");
    }
    for (const std::string& x : stops) {
      if (x.empty() || x.size() > 256) bad("a stop string must have 1 to 256 bytes");
    }
    o.stop = std::move(stops);
  }
  r.string("user", "");  // OpenAI's end-user id: checked, not used
}

}  // namespace

CompletionRequest parse_completion_request(const std::string& body, const CompletionLimits& limits) {
  return as_bad_request([&] {
    JsonObjectReader r = body_reader(body);
    accept_defaults(r, {{"n", 1},
                        {"best_of", 1},
                        {"echo", false},
                        {"logprobs", nullptr},
                        {"suffix", nullptr},
                        {"presence_penalty", 0},
                        {"frequency_penalty", 0},
                        {"logit_bias", nullptr},
                        {"stream_options", nullptr}});
    CompletionRequest req;
    req.options.max_tokens = 16;  // OpenAI's default
    req.model = model_field(r);
    if (!r.has("prompt")) bad("'prompt' is missing");
    const json p = r.value("prompt");
    if (p.is_string()) {
      req.prompt = p.get<std::string>();
    } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
      req.prompt = p[0].get<std::string>();
    } else if (p.is_array() && !p.empty() &&
               std::all_of(p.begin(), p.end(), [](const json& t) { return t.is_number_integer(); })) {
      std::vector<int32_t> ids;
      for (const json& t : p) {
        if (t.is_number_unsigned() ? t.get<uint64_t>() > uint64_t(std::numeric_limits<int32_t>::max())
                                   : t.get<int64_t>() < 0 || t.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
          bad(fmt::format("'prompt' holds {}, not a token id", t.dump()));
        }
        ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
      }
      req.prompt = std::move(ids);
    } else {
      bad("'prompt' must be a string, a list of one string, or a list of token ids");
    }
    req.options.max_tokens = r.integer("max_tokens", req.options.max_tokens, 1, limits.max_tokens);
    read_sampling(r, req.options, req.stream);
    r.finish();
    return req;
  });
}

chat::Conversation parse_messages(const json& messages) {
  if (!messages.is_array() || messages.empty())
    bad("'messages' must be a non-empty list of {\"role\", \"content\"} objects");
  chat::Conversation out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    const std::string at = fmt::format("messages[{}]", i);
    if (!m.is_object()) bad(fmt::format("'{}' must be an object with \"role\" and \"content\", got {}", at, m.dump()));
    for (const auto& [key, value] : m.items()) {
      if (key != "role" && key != "content")
        bad(fmt::format("'{}.{}' is not supported (only role and content)", at, key));
    }
    if (!m.contains("role") || !m["role"].is_string() || m["role"].get<std::string>().empty()) {
      bad(fmt::format("'{}.role' must be a non-empty string (\"system\", \"user\", \"assistant\")", at));
    }
    if (!m.contains("content")) bad(fmt::format("'{}.content' is missing", at));
    const json& c = m["content"];
    std::string content;
    if (c.is_string()) {
      content = c.get<std::string>();
    } else if (c.is_array()) {
      for (size_t k = 0; k < c.size(); ++k) {
        const json& part = c[k];
        const std::string where = fmt::format("{}.content[{}]", at, k);
        if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
          bad(fmt::format("'{}' must be an object {{\"type\": \"text\", \"text\": ...}}", where));
        }
        if (part["type"] != "text")
          bad(fmt::format("'{}.type' = {} is not supported (only \"text\")", where, part["type"].dump()));
        for (const auto& [key, value] : part.items()) {
          if (key != "type" && key != "text")
            bad(fmt::format("'{}.{}' is not supported (only type and text)", where, key));
        }
        if (!part.contains("text") || !part["text"].is_string()) bad(fmt::format("'{}.text' must be a string", where));
        content += (k > 0 ? "\n" : "") + part["text"].get<std::string>();
      }
    } else {
      bad(fmt::format("'{}.content' must be a string or a list of text parts, got {}", at, c.dump()));
    }
    out.push_back({m["role"].get<std::string>(), std::move(content)});
  }
  return out;
}

ChatRequest parse_chat_request(const std::string& body, const CompletionLimits& limits) {
  return as_bad_request([&] {
    JsonObjectReader r = body_reader(body);
    accept_defaults(r, {{"n", 1},
                        {"logprobs", false},
                        {"top_logprobs", nullptr},
                        {"presence_penalty", 0},
                        {"frequency_penalty", 0},
                        {"logit_bias", nullptr},
                        {"stream_options", nullptr},
                        {"tools", nullptr},
                        {"tool_choice", nullptr},
                        {"response_format", {{"type", "text"}}}});
    ChatRequest req;
    req.model = model_field(r);
    if (!r.has("messages")) bad("'messages' is missing");
    req.messages = parse_messages(r.value("messages"));
    for (const char* field : {"max_tokens", "max_completion_tokens"}) {
      if (!r.has(field)) {
        r.mark_read(field);
        continue;
      }
      const int64_t n = r.integer(field, 0, 1, limits.max_tokens);
      if (req.max_tokens && *req.max_tokens != n)
        bad(fmt::format("'max_tokens' and 'max_completion_tokens' differ ({} and {})", *req.max_tokens, n));
      req.max_tokens = n;
    }
    read_sampling(r, req.options, req.stream);
    r.finish();
    return req;
  });
}

AdapterRequest parse_adapter_request(const std::string& body) {
  return as_bad_request([&] {
    JsonObjectReader r = body_reader(body);
    AdapterRequest req{r.string("name", ""), r.string("path", "")};
    if (req.name.empty()) bad("'name' must be a non-empty string");
    if (req.path.empty()) bad("'path' must be a non-empty string");
    r.finish("(expected name and path)");
    return req;
  });
}

}  // namespace lora::serve
