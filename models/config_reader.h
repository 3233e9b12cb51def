// ConfigReader: reads a Hugging Face config.json field by field, strictly (core/json_object_reader.h). Every field is
// either read (with its type and range checked), known to leave the computation unchanged (metadata such as
// transformers_version, generation defaults, label maps), or refused: a field the implementation does
// not honour is never ignored. Errors name the file and the field.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "core/json_object_reader.h"

namespace lora::models {

class ConfigReader : public JsonObjectReader {
 public:
  // `source` names the config in errors (a path in quotes, or "preset 'gpt2'").
  ConfigReader(nlohmann::json json, std::string source);
  // Reads a config.json file through the strict JSON parser (core/json.h); errors name the path.
  static ConfigReader from_file(const std::string& path);

  const std::string& source() const { return source_; }

  // A token id field: an integer or a list of integers (the first is used), or null: -1. An id outside
  // [0, vocab_size) cannot occur, so it reads as -1 too.
  int64_t token_id(const std::string& key, int64_t vocab_size);

  // Refuses every field neither read nor known to be metadata, naming them.
  void finish() const;

 private:
  std::string source_;
};

}  // namespace lora::models
