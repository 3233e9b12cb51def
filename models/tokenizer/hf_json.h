// JsonView: a value of a tokenizer.json with its path, so that every refusal names file, field and value.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

namespace lora::tokenizer::hf {

// A view of one JSON value and where it is: `file`, the file as messages name it (e.g.
// "tokenizer.json 'models/llama/tokenizer.json'"), and `path`, e.g.
// "pre_tokenizer.pretokenizers[0].pattern.Regex". Accessors check the type and throw lora::Error
// "<file>: <path>: <what> (got <value>)" on a mismatch.
class JsonView {
 public:
  JsonView(const nlohmann::json& value, std::string path, const std::string& file)
      : value_(&value), path_(std::move(path)), file_(&file) {}

  const nlohmann::json& raw() const { return *value_; }
  const std::string& path() const { return path_; }
  const std::string& file() const { return *file_; }
  bool is_null() const { return value_->is_null(); }

  // Object fields. field(): required (missing fails). optional(): nullopt when missing or null.
  JsonView field(std::string_view key) const;
  std::optional<JsonView> optional(std::string_view key) const;
  // Fails naming the first field of this object that is not in `known` (a field this reader does not
  // implement could change what the file means, so it is refused rather than ignored).
  void only_fields(std::initializer_list<std::string_view> known) const;
  // The "type" field of a component (required, a string).
  std::string type() const;

  // Arrays.
  size_t size() const;  // fails unless an array
  JsonView operator[](size_t i) const;

  // Scalars.
  std::string string() const;
  bool boolean() const;
  int64_t integer(int64_t min, int64_t max) const;  // an integer (not 1.0) in [min, max]
  char32_t character() const;                       // a string of exactly one code point

  // Throw lora::Error about this value: "<file>: <path>: <message> (got <value>)".
  [[noreturn]] void fail(std::string_view message) const;
  // The same, for a well-formed value that this implementation does not support.
  [[noreturn]] void unsupported(std::string_view message) const;

  // A short rendering of the value for messages (long values are cut).
  std::string shown() const;

 private:
  const nlohmann::json* value_;
  std::string path_;
  const std::string* file_;
};

}  // namespace lora::tokenizer::hf
