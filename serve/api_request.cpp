// Strict reading of the server's request bodies: types, ranges and unknown fields.
#include "serve/api_request.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

namespace lora::serve {
using json = nlohmann::json;

namespace {

[[noreturn]] void bad(const std::string& message) {
  throw ApiError(400, "invalid_request_error", message);
}

json parse_object(const std::string& body) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {
    bad(std::string("the body is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) bad("the body must be a JSON object");
  return j;
}

int64_t integer(const json& j, const char* field, int64_t low, int64_t high) {
  if (!j.is_number_integer()) bad(fmt::format("'{}' must be an integer, got {}", field, j.dump()));
  const int64_t v =
      j.is_number_unsigned() && j.get<uint64_t>() > static_cast<uint64_t>(high) ? high + 1 : j.get<int64_t>();
  if (v < low || v > high) bad(fmt::format("'{}' = {} is outside [{}, {}]", field, j.dump(), low, high));
  return v;
}

double number(const json& j, const char* field, double low, double high) {
  if (!j.is_number()) bad(fmt::format("'{}' must be a number, got {}", field, j.dump()));
  const double v = j.get<double>();
  if (!std::isfinite(v) || v < low || v > high)
    bad(fmt::format("'{}' = {} is outside [{}, {}]", field, j.dump(), low, high));
  return v;
}

}  // namespace

json error_body(const std::string& type, const std::string& message) {
  return {{"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}}}};
}

namespace {

// Refuses the fields neither `known` nor `at_default` lists, and those of `at_default` at another value.
void check_fields(const json& j, const std::set<std::string>& known, const std::map<std::string, json>& at_default) {
  for (const auto& [key, value] : j.items()) {
    if (auto it = at_default.find(key); it != at_default.end()) {
      if (!value.is_null() && value != it->second) {
        bad(fmt::format("'{}' = {} is not supported (only {})", key, value.dump(), it->second.dump()));
      }
      continue;
    }
    if (!known.count(key)) bad(fmt::format("unknown field '{}'", key));
  }
}

std::string model_field(const json& j) {
  if (!j.contains("model") || !j["model"].is_string())
    bad("'model' must be a string (an adapter's name, or the base model's)");
  return j["model"].get<std::string>();
}

// The fields both kinds of request share: temperature, top_p, top_k, seed, stream, stop, user.
void read_sampling(const json& j, RequestOptions& o, bool& stream) {
  if (j.contains("temperature") && !j["temperature"].is_null())
    o.temperature = number(j["temperature"], "temperature", 0, 2);
  if (j.contains("top_p") && !j["top_p"].is_null()) {
    o.top_p = number(j["top_p"], "top_p", 0, 1);
    if (o.top_p == 0) bad("'top_p' must be above 0");
  }
  if (j.contains("top_k") && !j["top_k"].is_null()) o.top_k = integer(j["top_k"], "top_k", 0, 1 << 30);
  if (j.contains("seed") && !j["seed"].is_null()) {
    o.seed = static_cast<uint64_t>(
        integer(j["seed"], "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()));
  }
  if (j.contains("stream") && !j["stream"].is_null()) {
    if (!j["stream"].is_boolean()) bad(fmt::format("'stream' must be true or false, got {}", j["stream"].dump()));
    stream = j["stream"].get<bool>();
  }
  if (j.contains("stop") && !j["stop"].is_null()) {
    const json& s = j["stop"];
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
  if (j.contains("user") && !j["user"].is_null() && !j["user"].is_string()) bad("'user' must be a string");
}

}  // namespace

CompletionRequest parse_completion_request(const std::string& body, const CompletionLimits& limits) {
  const json j = parse_object(body);
  // Fields OpenAI defines that change nothing here at their default value; other values are refused.
  static const std::map<std::string, json> at_default = {{"n", 1},
                                                         {"best_of", 1},
                                                         {"echo", false},
                                                         {"logprobs", nullptr},
                                                         {"suffix", nullptr},
                                                         {"presence_penalty", 0},
                                                         {"frequency_penalty", 0},
                                                         {"logit_bias", nullptr},
                                                         {"stream_options", nullptr}};
  static const std::set<std::string> known = {"model", "prompt", "max_tokens", "temperature", "top_p",
                                              "top_k", "stream", "stop",       "seed",        "user"};
  check_fields(j, known, at_default);
  CompletionRequest r;
  r.options.max_tokens = 16;  // OpenAI's default
  r.model = model_field(j);
  if (!j.contains("prompt")) bad("'prompt' is missing");
  const json& p = j["prompt"];
  if (p.is_string()) {
    r.prompt = p.get<std::string>();
  } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
    r.prompt = p[0].get<std::string>();
  } else if (p.is_array() && !p.empty() &&
             std::all_of(p.begin(), p.end(), [](const json& t) { return t.is_number_integer(); })) {
    std::vector<int32_t> ids;
    for (const json& t : p)
      ids.push_back(static_cast<int32_t>(integer(t, "prompt", 0, std::numeric_limits<int32_t>::max())));
    r.prompt = std::move(ids);
  } else {
    bad("'prompt' must be a string, a list of one string, or a list of token ids");
  }
  if (j.contains("max_tokens") && !j["max_tokens"].is_null()) {
    r.options.max_tokens = integer(j["max_tokens"], "max_tokens", 1, limits.max_tokens);
  }
  read_sampling(j, r.options, r.stream);
  return r;
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
  const json j = parse_object(body);
  static const std::map<std::string, json> at_default = {{"n", 1},
                                                         {"logprobs", false},
                                                         {"top_logprobs", nullptr},
                                                         {"presence_penalty", 0},
                                                         {"frequency_penalty", 0},
                                                         {"logit_bias", nullptr},
                                                         {"stream_options", nullptr},
                                                         {"tools", nullptr},
                                                         {"tool_choice", nullptr},
                                                         {"response_format", {{"type", "text"}}}};
  static const std::set<std::string> known = {"model",       "messages", "max_tokens", "max_completion_tokens",
                                              "temperature", "top_p",    "top_k",      "stream",
                                              "stop",        "seed",     "user"};
  check_fields(j, known, at_default);
  ChatRequest r;
  r.model = model_field(j);
  if (!j.contains("messages")) bad("'messages' is missing");
  r.messages = parse_messages(j["messages"]);
  for (const char* field : {"max_tokens", "max_completion_tokens"}) {
    if (!j.contains(field) || j[field].is_null()) continue;
    const int64_t n = integer(j[field], field, 1, limits.max_tokens);
    if (r.max_tokens && *r.max_tokens != n)
      bad(fmt::format("'max_tokens' and 'max_completion_tokens' differ ({} and {})", *r.max_tokens, n));
    r.max_tokens = n;
  }
  read_sampling(j, r.options, r.stream);
  return r;
}

AdapterRequest parse_adapter_request(const std::string& body) {
  const json j = parse_object(body);
  for (const auto& [key, value] : j.items()) {
    if (key != "name" && key != "path") bad(fmt::format("unknown field '{}' (expected name and path)", key));
  }
  if (!j.contains("name") || !j["name"].is_string() || j["name"].get<std::string>().empty())
    bad("'name' must be a non-empty string");
  if (!j.contains("path") || !j["path"].is_string() || j["path"].get<std::string>().empty())
    bad("'path' must be a non-empty string");
  return {j["name"].get<std::string>(), j["path"].get<std::string>()};
}

}  // namespace lora::serve
