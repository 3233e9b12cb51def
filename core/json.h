// Strict JSON: every JSON document the framework reads (config.json, adapter_config.json, tokenizer files,
// checkpoints, request bodies, data records) is parsed here, so every reader refuses the same things:
//   - text that is not JSON, with the line and column where it stops being JSON;
//   - a key given twice in one object (JSON lets a parser keep either; two "r" fields in an adapter config
//     would silently pick one), named with the path of the object that holds it;
//   - nesting deeper than kMaxJsonDepth, and numbers no double holds (1e999);
//   - (by nlohmann::json itself) invalid UTF-8 in strings and anything after the document.
// `source` names the document in errors: "config 'gpt2/config.json'", "request body".
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <string>
#include <string_view>

namespace lora {

inline constexpr int kMaxJsonDepth = 256;
inline constexpr size_t kMaxJsonFileBytes = size_t(1) << 30;  // tokenizer.json of a large vocabulary: tens of MB

nlohmann::json parse_json(std::string_view text, const std::string& source);
// Keeps the document's key order (PEFT's per-module patterns match first-in-file).
nlohmann::ordered_json parse_json_ordered(std::string_view text, const std::string& source);

// Reads and parses a file; errors name `what` and the path ("config '<path>'"). A missing file, a folder,
// a file above `max_bytes` are refused before anything is parsed.
nlohmann::json read_json_file(const std::string& path, std::string_view what, size_t max_bytes = kMaxJsonFileBytes);
nlohmann::ordered_json read_json_file_ordered(const std::string& path, std::string_view what,
                                              size_t max_bytes = kMaxJsonFileBytes);
// The file's bytes, with the same checks (for callers that keep the text too).
std::string read_json_text(const std::string& path, std::string_view what, size_t max_bytes = kMaxJsonFileBytes);

// "an integer", "a number", "a string", ...: how errors describe a value's type.
std::string json_type_name(const nlohmann::json& value);
std::string json_type_name(const nlohmann::ordered_json& value);

}  // namespace lora
