// ConfigReader: reads a Hugging Face config.json field by field, strictly. Every field is either read
// (with its type and range checked), known to leave the computation unchanged (metadata such as
// transformers_version, generation defaults, label maps), or refused: a field the implementation does
// not honour is never ignored. Errors name the file and the field.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace lora::models {

class ConfigReader {
 public:
  // `source` names the config in errors (a path, or "preset 'gpt2'").
  ConfigReader(nlohmann::json json, std::string source);
  // Reads a config.json file; a missing file or invalid JSON is an error naming the path.
  static ConfigReader from_file(const std::string& path);

  const std::string& source() const { return source_; }
  const nlohmann::json& json() const { return json_; }
  bool has(const std::string& key) const;  // present and not null

  // Typed reads: `fallback` when the field is absent or null; an error when it has the wrong type or is out
  // of [min, max]. Each marks the field as read.
  int64_t integer(const std::string& key, int64_t fallback, int64_t min, int64_t max);
  int64_t required_integer(const std::string& key, int64_t min, int64_t max);
  double number(const std::string& key, double fallback, double min, double max);
  bool boolean(const std::string& key, bool fallback);
  std::string string(const std::string& key, const std::string& fallback);
  // A token id field: an integer or a list of integers (the first is used), or null: -1. An id outside
  // [0, vocab_size) cannot occur, so it reads as -1 too.
  int64_t token_id(const std::string& key, int64_t vocab_size);
  // An object field (or null / absent: an empty object); its own fields are checked by the caller.
  nlohmann::json object(const std::string& key);

  // The field must be absent, null, or equal one of `accepted` (e.g. activation_function "gelu_new").
  void expect_one_of(const std::string& key, const std::vector<nlohmann::json>& accepted, const std::string& why);
  // Marks fields as read without reading them (they were consumed elsewhere).
  void mark_read(const std::string& key) { read_.insert(key); }

  // Refuses every field neither read nor known to be metadata, naming them.
  void finish() const;

  [[noreturn]] void fail(const std::string& key, const std::string& message) const;

 private:
  const nlohmann::json* field(const std::string& key);
  nlohmann::json json_;
  std::string source_;
  std::set<std::string> read_;
};

}  // namespace lora::models
