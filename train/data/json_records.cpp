// JSON records of a data file: JSONL split into lines, a .json array read whole, one record parsed.
#include "train/data/json_records.h"
#include "core/json.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/files.h"
#include "models/tokenizer/byte_unicode.h"

namespace lora::train {
namespace {

constexpr std::string_view kBom = "\xEF\xBB\xBF";

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

std::string_view skip_bom(std::string_view bytes) {
  return bytes.starts_with(kBom) ? bytes.substr(3) : bytes;
}

// The extent of the JSON value that starts at bytes[0] (as far as `bytes` goes when it is cut short): a
// string to its closing quote, an object or array to its matching bracket, anything else to the next
// separator.
size_t value_extent(std::string_view bytes) {
  if (bytes.empty()) return 0;
  const char first = bytes[0];
  if (first != '{' && first != '[' && first != '"') {
    size_t end = 0;
    while (end < bytes.size() && !is_space(bytes[end]) && bytes[end] != ',' && bytes[end] != ']' && bytes[end] != '}')
      ++end;
    return end;
  }
  int64_t depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < bytes.size(); ++i) {
    const char c = bytes[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
        if (depth == 0) return i + 1;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if (c == '}' || c == ']') {
      if (--depth == 0) return i + 1;
    }
  }
  return bytes.size();
}

}  // namespace

std::string record_place(const std::string& path, JsonLayout layout, int64_t line) {
  return fmt::format("data file '{}' {} {}", path, layout == JsonLayout::Lines ? "line" : "record", line);
}

JsonLayout json_layout(std::string_view bytes) {
  bytes = skip_bom(bytes);
  for (char c : bytes) {
    if (!is_space(c)) return c == '[' ? JsonLayout::Array : JsonLayout::Lines;
  }
  return JsonLayout::Lines;
}

int64_t split_lines(std::string_view bytes, int64_t first_line, std::vector<RecordText>& out) {
  int64_t line = first_line;
  size_t start = 0;
  while (start < bytes.size()) {
    const char* newline = static_cast<const char*>(std::memchr(bytes.data() + start, '\n', bytes.size() - start));
    const size_t end = newline ? size_t(newline - bytes.data()) : bytes.size();
    std::string_view text = bytes.substr(start, end - start);
    while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
    size_t lead = 0;
    while (lead < text.size() && is_space(text[lead])) ++lead;
    text.remove_prefix(lead);
    if (!text.empty()) out.push_back({line, text});
    ++line;
    start = end + 1;
  }
  return line;
}

nlohmann::json parse_record(std::string_view text, const std::string& place) {
  const size_t bad = tokenizer::find_invalid_utf8(text);
  LORA_CHECK(bad == std::string_view::npos, "{}: not UTF-8 (an invalid byte 0x{:02X} at byte {} of the line)", place,
             static_cast<unsigned char>(text[bad]), bad + 1);
  const nlohmann::json record = parse_json(text, place);
  LORA_CHECK(record.is_object(), "{}: a JSON {}, not an object (each record is one {{...}})", place,
             record.type_name());
  return record;
}

RecordText first_record(std::string_view bytes, JsonLayout layout) {
  bytes = skip_bom(bytes);
  if (layout == JsonLayout::Lines) {
    std::vector<RecordText> lines;
    // Only as far as the first non-blank line.
    int64_t line = 1;
    while (!bytes.empty()) {
      const size_t newline = bytes.find('\n');
      const std::string_view chunk = bytes.substr(0, newline == std::string_view::npos ? bytes.size() : newline + 1);
      line = split_lines(chunk, line, lines);
      if (!lines.empty()) return lines.front();
      bytes.remove_prefix(chunk.size());
    }
    return {};
  }
  size_t at = bytes.find('[');
  if (at == std::string_view::npos) return {};
  ++at;
  while (at < bytes.size() && is_space(bytes[at])) ++at;
  if (at >= bytes.size() || bytes[at] == ']') return {};
  return {1, bytes.substr(at, value_extent(bytes.substr(at)))};
}

void read_jsonl_blocks(const std::string& path, size_t block_bytes,
                       const std::function<void(const std::vector<RecordText>&)>& block) {
  LORA_CHECK(path_exists(path), "data file '{}': no such file", path);
  LORA_CHECK(is_regular_file(path), "data file '{}': not a regular file", path);
  std::ifstream in(path, std::ios::binary);
  LORA_CHECK(in.is_open(), "data file '{}': cannot open it", path);
  // No larger a buffer than the file needs (small files are common: tests, fuzzing).
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (!ec && size < block_bytes) block_bytes = static_cast<size_t>(size) + 1;
  block_bytes = std::max<size_t>(block_bytes, 1);
  std::string buffer;
  std::vector<RecordText> lines;
  int64_t line = 1;
  bool first = true;
  for (bool end_of_file = false; !end_of_file;) {
    const size_t held = buffer.size();
    buffer.resize(held + block_bytes);
    in.read(buffer.data() + held, std::streamsize(block_bytes));
    const size_t got = static_cast<size_t>(in.gcount());
    buffer.resize(held + got);
    end_of_file = got < block_bytes;
    LORA_CHECK(!in.bad(), "data file '{}': read failed near line {}", path, line);
    if (first && buffer.size() >= kBom.size()) {
      if (std::string_view(buffer).starts_with(kBom)) buffer.erase(0, kBom.size());
      first = false;
    }
    // Whole lines only, unless the file ended.
    const size_t last_newline = buffer.rfind('\n');
    const size_t whole = end_of_file ? buffer.size() : last_newline == std::string::npos ? 0 : last_newline + 1;
    LORA_CHECK(buffer.size() - whole <= kMaxJsonLineBytes,
               "data file '{}' line {}: longer than {} MiB (a record is one line; is this JSONL?)", path,
               line + std::count(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(whole), '\n'),
               kMaxJsonLineBytes >> 20);
    if (whole == 0) continue;
    lines.clear();
    const int64_t next = split_lines(std::string_view(buffer).substr(0, whole), line, lines);
    for (const RecordText& record : lines) {
      LORA_CHECK(record.text.size() <= kMaxJsonLineBytes, "data file '{}' line {}: longer than {} MiB", path,
                 record.line, kMaxJsonLineBytes >> 20);
    }
    if (!lines.empty()) block(lines);
    line = next;
    buffer.erase(0, whole);
  }
}

std::vector<nlohmann::json> read_json_array(const std::string& path) {
  std::string bytes = read_file(path, "data file", kMaxJsonArrayBytes);
  if (std::string_view(bytes).starts_with(kBom)) bytes.erase(0, kBom.size());
  const size_t bad = tokenizer::find_invalid_utf8(bytes);
  if (bad != std::string::npos) {
    LORA_FAIL("data file '{}' line {}: not UTF-8 (an invalid byte 0x{:02X} at byte {} of the file)", path,
              1 + std::count(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(bad), '\n'),
              static_cast<unsigned char>(bytes[bad]), bad + 1);
  }
  nlohmann::json document = parse_json(bytes, fmt::format("data file '{}'", path));
  LORA_CHECK(document.is_array(), "data file '{}': a JSON {}, not an array of records (or JSONL, one record a line)",
             path, document.type_name());
  std::vector<nlohmann::json> records;
  records.reserve(document.size());
  for (nlohmann::json& record : document) records.push_back(std::move(record));
  return records;
}

}  // namespace lora::train
