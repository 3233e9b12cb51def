// JsonObjectReader: reads a JSON object field by field, strictly. Every field is either read (its type and
// range checked), declared as accepted without changing anything (`ignored`: metadata), or refused by
// finish(): a field the code does not honour is never passed over in silence. Used for config.json
// (models/config_reader.h adds what is particular to transformers' configs), adapter_config.json,
// checkpoints' state.json and the server's request bodies.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace lora {

class JsonObjectReader {
 public:
  // `context` begins every error ("config 'gpt2/config.json'"); empty for messages that stand alone (a
  // request body's 400). `ignored` lists fields accepted without being read; it must outlive the reader.
  JsonObjectReader(nlohmann::json json, std::string context, const std::set<std::string>* ignored = nullptr);

  const nlohmann::json& json() const { return json_; }
  const std::string& context() const { return context_; }
  bool has(const std::string& key) const;  // present and not null

  // Typed reads: `fallback` when the field is absent or null; an error when it has the wrong type or is out
  // of [min, max]. Each marks the field as read.
  int64_t integer(const std::string& key, int64_t fallback, int64_t min, int64_t max);
  int64_t required_integer(const std::string& key, int64_t min, int64_t max);
  double number(const std::string& key, double fallback, double min, double max);
  bool boolean(const std::string& key, bool fallback);
  std::string string(const std::string& key, const std::string& fallback);
  std::string required_string(const std::string& key);
  // An object field (or null / absent: an empty object); its own fields are checked by the caller.
  nlohmann::json object(const std::string& key);
  // Any value (null when absent), for fields whose shape the caller checks itself.
  nlohmann::json value(const std::string& key);

  // The field must be absent, null, or equal one of `accepted` (e.g. activation_function "gelu_new").
  void expect_one_of(const std::string& key, const std::vector<nlohmann::json>& accepted, const std::string& why);
  // Marks a field as read without reading it (it was consumed elsewhere).
  void mark_read(const std::string& key) { read_.insert(key); }

  // Refuses every field neither read nor ignored, naming them; `hint` ends the message.
  void finish(const std::string& hint = "") const;

  [[noreturn]] void fail(const std::string& key, const std::string& message) const;

 private:
  const nlohmann::json* field(const std::string& key);
  nlohmann::json json_;
  std::string context_;
  const std::set<std::string>* ignored_;
  std::set<std::string> read_;
};

}  // namespace lora
