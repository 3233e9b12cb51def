// Strict JSON parsing: nlohmann::json's parser with a callback that refuses duplicate keys and deep nesting,
// and its errors turned into messages with a line and column.
#include "core/json.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <unordered_set>
#include <vector>

#include "core/error.h"

namespace lora {
namespace {

// 1-based line and column of byte offset `byte` (nlohmann counts the byte it stopped on from 1).
std::string position(std::string_view text, size_t byte) {
  const size_t end = std::min(byte > 0 ? byte - 1 : 0, text.size());
  size_t line = 1, column = 1;
  for (size_t i = 0; i < end; ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  // A one-line document (a JSONL record, a request body) has only columns.
  if (text.find('\n') == std::string_view::npos) return fmt::format("column {}", column);
  return fmt::format("line {}, column {}", line, column);
}

// nlohmann's messages start with "[json.exception.parse_error.101] parse error at line 1, column 2: ";
// the position is given by ours, so only the reason after the position is kept. Its "last read" quotes
// the document, which may be megabytes or invalid UTF-8 (and the message may end up in a JSON error body):
// at most 200 bytes are kept, bytes outside printable ASCII written as \xNN.
std::string reason(const std::string& what) {
  std::string_view r = what;
  if (const size_t column = r.find("column "); column != std::string_view::npos) {
    if (const size_t colon = r.find(": ", column); colon != std::string_view::npos) r = r.substr(colon + 2);
  } else if (const size_t bracket = r.find("] "); bracket != std::string_view::npos) {
    r = r.substr(bracket + 2);  // "[json.exception.out_of_range.406] number overflow parsing '1e999'"
  }
  std::string out;
  for (const char ch : r.substr(0, 200)) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7f) {
      out += ch;
    } else {
      out += fmt::format("\\x{:02X}", c);
    }
  }
  if (r.size() > 200) out += "...";
  return out;
}

// The keys seen so far in one object: a short list searched in order (records and configs have a few
// keys), turned into a hash set once it grows (a vocabulary's tens of thousands).
class KeySet {
 public:
  bool insert(const std::string& key) {
    if (large_.empty()) {
      if (std::find(small_.begin(), small_.end(), key) != small_.end()) return false;
      small_.push_back(key);
      if (small_.size() > 32) large_.insert(small_.begin(), small_.end());
      return true;
    }
    return large_.insert(key).second;
  }

 private:
  std::vector<std::string> small_;
  std::unordered_set<std::string> large_;
};

// An object or array being parsed; `last_key` gives messages the path of the object holding a duplicate.
struct OpenContainer {
  KeySet keys;
  std::string last_key;
};

template <class Json>
Json parse_strict(std::string_view text, const std::string& source) {
  std::vector<OpenContainer> open;
  auto where = [&] {
    std::string path;
    for (size_t i = 0; i + 1 < open.size(); ++i) {  // the keys leading to the innermost object
      if (!open[i].last_key.empty()) path += (path.empty() ? "" : ".") + open[i].last_key;
    }
    return path.empty() ? std::string("the top-level object") : "the object at '" + path + "'";
  };
  typename Json::parser_callback_t callback = [&](int depth, nlohmann::json::parse_event_t event, Json& parsed) {
    using E = nlohmann::json::parse_event_t;
    switch (event) {
      case E::object_start:
      case E::array_start:
        LORA_CHECK(depth < kMaxJsonDepth, "{}: JSON nested deeper than {} levels", source, kMaxJsonDepth);
        open.emplace_back();
        break;
      case E::object_end:
      case E::array_end:
        if (!open.empty()) open.pop_back();
        break;
      case E::key: {
        const std::string& key = parsed.template get_ref<const std::string&>();
        OpenContainer& object = open.back();
        LORA_CHECK(object.keys.insert(key), "{}: key '{}' appears twice in {} (JSON leaves which one counts open)",
                   source, key, where());
        object.last_key = key;
        break;
      }
      case E::value:
        // A number too large for a double parses as +-inf only when written as an integer literal
        // beyond 64 bits with an exponent; nlohmann refuses 1e999 itself (out_of_range.406).
        if (parsed.is_number_float() && !std::isfinite(parsed.template get<double>())) {
          LORA_FAIL("{}: the number {} does not fit a double", source, parsed.dump());
        }
        break;
    }
    return true;
  };
  try {
    return Json::parse(text, callback);
  } catch (const nlohmann::json::parse_error& e) {
    LORA_FAIL("{}: not valid JSON at {}: {}", source, position(text, e.byte), reason(e.what()));
  } catch (const nlohmann::json::exception& e) {  // out_of_range.406: a number that overflows a double
    LORA_FAIL("{}: not valid JSON: {}", source, reason(e.what()));
  }
}

template <class Json>
std::string type_name(const Json& j) {
  if (j.is_number_integer()) return "an integer";
  if (j.is_number()) return "a number";
  if (j.is_boolean()) return "a boolean";
  if (j.is_string()) return "a string";
  if (j.is_array()) return "a list";
  if (j.is_object()) return "an object";
  if (j.is_binary()) return "binary data";
  return "null";
}

}  // namespace

nlohmann::json parse_json(std::string_view text, const std::string& source) {
  return parse_strict<nlohmann::json>(text, source);
}

nlohmann::ordered_json parse_json_ordered(std::string_view text, const std::string& source) {
  return parse_strict<nlohmann::ordered_json>(text, source);
}

std::string read_json_text(const std::string& path, std::string_view what, size_t max_bytes) {
  namespace fs = std::filesystem;
  std::error_code ec;
  LORA_CHECK(fs::exists(path, ec), "{} '{}' does not exist", what, path);
  LORA_CHECK(!fs::is_directory(path, ec), "{} '{}' is a folder, not a JSON file", what, path);
  const auto size = fs::file_size(path, ec);
  LORA_CHECK(!ec, "cannot read {} '{}': {}", what, path, ec.message());
  LORA_CHECK(size <= max_bytes, "{} '{}' holds {} bytes, more than the {} this reader accepts", what, path, size,
             max_bytes);
  std::ifstream in(path, std::ios::binary);
  LORA_CHECK(in.is_open(), "cannot open {} '{}'", what, path);
  std::string text(static_cast<size_t>(size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(size));
  LORA_CHECK(in.gcount() == static_cast<std::streamsize>(size), "error while reading {} '{}'", what, path);
  return text;
}

nlohmann::json read_json_file(const std::string& path, std::string_view what, size_t max_bytes) {
  return parse_json(read_json_text(path, what, max_bytes), fmt::format("{} '{}'", what, path));
}

nlohmann::ordered_json read_json_file_ordered(const std::string& path, std::string_view what, size_t max_bytes) {
  return parse_json_ordered(read_json_text(path, what, max_bytes), fmt::format("{} '{}'", what, path));
}

std::string json_type_name(const nlohmann::json& value) {
  return type_name(value);
}
std::string json_type_name(const nlohmann::ordered_json& value) {
  return type_name(value);
}

}  // namespace lora
