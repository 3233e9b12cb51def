// JsonObjectReader: strict, field-by-field reading of a JSON object.
#include "core/json_object_reader.h"

#include <cmath>

#include "core/error.h"
#include "core/json.h"

namespace lora {

JsonObjectReader::JsonObjectReader(nlohmann::json json, std::string context, const std::set<std::string>* ignored)
    : json_(std::move(json)), context_(std::move(context)), ignored_(ignored) {
  if (!json_.is_object()) {
    LORA_FAIL("{}{}expected a JSON object, got {}", context_, context_.empty() ? "" : ": ", json_type_name(json_));
  }
}

bool JsonObjectReader::has(const std::string& key) const {
  const auto it = json_.find(key);
  return it != json_.end() && !it->is_null();
}

void JsonObjectReader::fail(const std::string& key, const std::string& message) const {
  if (context_.empty()) LORA_FAIL("'{}' {}", key, message);
  LORA_FAIL("{}: '{}' {}", context_, key, message);
}

const nlohmann::json* JsonObjectReader::field(const std::string& key) {
  read_.insert(key);
  return has(key) ? &json_[key] : nullptr;
}

int64_t JsonObjectReader::integer(const std::string& key, int64_t fallback, int64_t min, int64_t max) {
  const nlohmann::json* j = field(key);
  if (!j) return fallback;
  // Integral floats (2048.0) appear in hand-edited files; anything with a fraction is refused.
  const bool integral = j->is_number_integer() ||
                        (j->is_number_float() && std::isfinite(j->get<double>()) &&
                         std::floor(j->get<double>()) == j->get<double>() && std::abs(j->get<double>()) < 9.0e15);
  if (!integral) fail(key, fmt::format("must be an integer, got {} ({})", json_type_name(*j), j->dump()));
  const int64_t v = j->is_number_unsigned() && j->get<uint64_t>() > uint64_t(INT64_MAX) ? INT64_MAX
                    : j->is_number_float()                                              ? int64_t(j->get<double>())
                                                                                        : j->get<int64_t>();
  if (v < min || v > max) fail(key, fmt::format("= {} is outside [{}, {}]", j->dump(), min, max));
  return v;
}

int64_t JsonObjectReader::required_integer(const std::string& key, int64_t min, int64_t max) {
  if (!has(key)) fail(key, "is missing");
  return integer(key, 0, min, max);
}

double JsonObjectReader::number(const std::string& key, double fallback, double min, double max) {
  const nlohmann::json* j = field(key);
  if (!j) return fallback;
  if (!j->is_number()) fail(key, fmt::format("must be a number, got {} ({})", json_type_name(*j), j->dump()));
  const double v = j->get<double>();
  if (!std::isfinite(v) || v < min || v > max) fail(key, fmt::format("= {} is outside [{}, {}]", j->dump(), min, max));
  return v;
}

bool JsonObjectReader::boolean(const std::string& key, bool fallback) {
  const nlohmann::json* j = field(key);
  if (!j) return fallback;
  if (!j->is_boolean()) fail(key, fmt::format("must be true or false, got {} ({})", json_type_name(*j), j->dump()));
  return j->get<bool>();
}

std::string JsonObjectReader::string(const std::string& key, const std::string& fallback) {
  const nlohmann::json* j = field(key);
  if (!j) return fallback;
  if (!j->is_string()) fail(key, fmt::format("must be a string, got {} ({})", json_type_name(*j), j->dump()));
  return j->get<std::string>();
}

std::string JsonObjectReader::required_string(const std::string& key) {
  if (!has(key)) fail(key, "is missing");
  return string(key, "");
}

nlohmann::json JsonObjectReader::object(const std::string& key) {
  const nlohmann::json* j = field(key);
  if (!j) return nlohmann::json::object();
  if (!j->is_object()) fail(key, fmt::format("must be an object, got {} ({})", json_type_name(*j), j->dump()));
  return *j;
}

nlohmann::json JsonObjectReader::value(const std::string& key) {
  const nlohmann::json* j = field(key);
  return j ? *j : nlohmann::json();
}

void JsonObjectReader::expect_one_of(const std::string& key, const std::vector<nlohmann::json>& accepted,
                                     const std::string& why) {
  const nlohmann::json* j = field(key);
  if (!j) return;
  for (const auto& a : accepted) {
    if (*j == a) return;
  }
  fail(key, fmt::format("= {} is not supported: {}", j->dump(), why));
}

void JsonObjectReader::finish(const std::string& hint) const {
  std::vector<std::string> unknown;
  for (const auto& [key, value] : json_.items()) {
    if (!read_.count(key) && !(ignored_ && ignored_->count(key))) unknown.push_back(key);
  }
  if (unknown.empty()) return;
  std::string list;
  for (const auto& k : unknown) list += (list.empty() ? "'" : ", '") + k + "'";
  LORA_FAIL("{}{}unknown field{} {}: fields that are not honoured are refused{}{}", context_,
            context_.empty() ? "" : ": ", unknown.size() > 1 ? "s" : "", list, hint.empty() ? "" : " ", hint);
}

}  // namespace lora
