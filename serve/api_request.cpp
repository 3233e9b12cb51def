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

[[noreturn]] void bad(const std::string& message) { throw ApiError(400, "invalid_request_error", message); }

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
  const int64_t v = j.is_number_unsigned() && j.get<uint64_t>() > static_cast<uint64_t>(high) ? high + 1 : j.get<int64_t>();
  if (v < low || v > high) bad(fmt::format("'{}' = {} is outside [{}, {}]", field, j.dump(), low, high));
  return v;
}

double number(const json& j, const char* field, double low, double high) {
  if (!j.is_number()) bad(fmt::format("'{}' must be a number, got {}", field, j.dump()));
  const double v = j.get<double>();
  if (!std::isfinite(v) || v < low || v > high) bad(fmt::format("'{}' = {} is outside [{}, {}]", field, j.dump(), low, high));
  return v;
}

}  // namespace

json error_body(const std::string& type, const std::string& message) {
  return {{"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}}}};
}

CompletionRequest parse_completion_request(const std::string& body, const CompletionLimits& limits) {
  const json j = parse_object(body);
  // Fields OpenAI defines that change nothing here at their default value; other values are refused.
  static const std::map<std::string, json> at_default = {{"n", 1},           {"best_of", 1},       {"echo", false},
                                                        {"logprobs", nullptr}, {"suffix", nullptr},
                                                        {"presence_penalty", 0}, {"frequency_penalty", 0},
                                                        {"logit_bias", nullptr}, {"stream_options", nullptr}};
  static const std::set<std::string> known = {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k",
                                              "stream", "stop",  "seed",       "user"};
  CompletionRequest r;
  r.options.max_tokens = 16;  // OpenAI's default
  for (const auto& [key, value] : j.items()) {
    if (auto it = at_default.find(key); it != at_default.end()) {
      if (!value.is_null() && value != it->second) {
        bad(fmt::format("'{}' = {} is not supported (only {})", key, value.dump(), it->second.dump()));
      }
      continue;
    }
    if (!known.count(key)) bad(fmt::format("unknown field '{}'", key));
  }
  if (!j.contains("model") || !j["model"].is_string()) bad("'model' must be a string (an adapter's name, or the base model's)");
  r.model = j["model"].get<std::string>();
  if (!j.contains("prompt")) bad("'prompt' is missing");
  const json& p = j["prompt"];
  if (p.is_string()) {
    r.prompt = p.get<std::string>();
  } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
    r.prompt = p[0].get<std::string>();
  } else if (p.is_array() && !p.empty() && std::all_of(p.begin(), p.end(), [](const json& t) { return t.is_number_integer(); })) {
    std::vector<int32_t> ids;
    for (const json& t : p) ids.push_back(static_cast<int32_t>(integer(t, "prompt", 0, std::numeric_limits<int32_t>::max())));
    r.prompt = std::move(ids);
  } else {
    bad("'prompt' must be a string, a list of one string, or a list of token ids");
  }
  if (j.contains("max_tokens") && !j["max_tokens"].is_null()) {
    r.options.max_tokens = integer(j["max_tokens"], "max_tokens", 1, limits.max_tokens);
  }
  if (j.contains("temperature") && !j["temperature"].is_null()) r.options.temperature = number(j["temperature"], "temperature", 0, 2);
  if (j.contains("top_p") && !j["top_p"].is_null()) {
    r.options.top_p = number(j["top_p"], "top_p", 0, 1);
    if (r.options.top_p == 0) bad("'top_p' must be above 0");
  }
  if (j.contains("top_k") && !j["top_k"].is_null()) r.options.top_k = integer(j["top_k"], "top_k", 0, 1 << 30);
  if (j.contains("seed") && !j["seed"].is_null()) {
    r.options.seed = static_cast<uint64_t>(integer(j["seed"], "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()));
  }
  if (j.contains("stream") && !j["stream"].is_null()) {
    if (!j["stream"].is_boolean()) bad(fmt::format("'stream' must be true or false, got {}", j["stream"].dump()));
    r.stream = j["stream"].get<bool>();
  }
  if (j.contains("stop") && !j["stop"].is_null()) {
    const json& s = j["stop"];
    std::vector<std::string> stops;
    if (s.is_string()) stops.push_back(s.get<std::string>());
    else if (s.is_array() && s.size() <= 4 && std::all_of(s.begin(), s.end(), [](const json& x) { return x.is_string(); })) {
      for (const json& x : s) stops.push_back(x.get<std::string>());
    } else {
      bad("'stop' must be a string or a list of up to 4 strings");
    }
    for (const std::string& x : stops) {
      if (x.empty() || x.size() > 256) bad("a stop string must have 1 to 256 bytes");
    }
    r.options.stop = std::move(stops);
  }
  if (j.contains("user") && !j["user"].is_null() && !j["user"].is_string()) bad("'user' must be a string");
  return r;
}

AdapterRequest parse_adapter_request(const std::string& body) {
  const json j = parse_object(body);
  for (const auto& [key, value] : j.items()) {
    if (key != "name" && key != "path") bad(fmt::format("unknown field '{}' (expected name and path)", key));
  }
  if (!j.contains("name") || !j["name"].is_string() || j["name"].get<std::string>().empty()) bad("'name' must be a non-empty string");
  if (!j.contains("path") || !j["path"].is_string() || j["path"].get<std::string>().empty()) bad("'path' must be a non-empty string");
  return {j["name"].get<std::string>(), j["path"].get<std::string>()};
}

}  // namespace lora::serve
