// Reading JSON records from a data file: JSONL (one object a line; blank lines, CRLF line ends, a UTF-8 BOM
// and a missing final newline are accepted) or one JSON array of objects (a .json file), each record with the
// line (JSONL) or 1-based index (array) that errors name. Bytes that are not UTF-8 are refused naming the
// line and offset; so is a line longer than kMaxJsonLineBytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace lora::train {

inline constexpr size_t kMaxJsonLineBytes = size_t{64} << 20;      // one JSONL record
inline constexpr uint64_t kMaxJsonArrayBytes = uint64_t{4} << 30;  // a whole .json array file

enum class JsonLayout { Lines, Array };

// One record's text before parsing. `line`: its line (Lines) or index + 1 (Array).
struct RecordText {
  int64_t line = 0;
  std::string_view text;
};

// "'data.jsonl' line 3" or "'data.json' record 3" (the array's third element): how errors name a record.
std::string record_place(const std::string& path, JsonLayout layout, int64_t line);

// The layout of `bytes` (a file's first bytes): Array when its first byte other than whitespace or a BOM is
// '[', else Lines.
JsonLayout json_layout(std::string_view bytes);

// Appends the non-blank lines of `bytes` (whole lines, the first numbered `first_line`; the last may lack its
// newline) to `out`, each without its line end; returns the number of the line after the last one.
int64_t split_lines(std::string_view bytes, int64_t first_line, std::vector<RecordText>& out);

// Parses one record's text: UTF-8, then JSON, then an object. Throws lora::Error naming `place`.
nlohmann::json parse_record(std::string_view text, const std::string& place);

// The first record of `bytes` (a prefix of a file; a UTF-8 BOM skipped) as it lays out: the first non-blank
// line (Lines), or the text of the array's first element (Array: {...} found by scanning, brackets counted
// outside strings). Empty text when there is none in `bytes`; line 0 when `bytes` holds no record at all.
RecordText first_record(std::string_view bytes, JsonLayout layout);

// Reads a JSONL file in blocks of whole lines (about `block_bytes` each) and hands each block's non-blank
// lines to `block`, in file order. The string_views are valid during the call only. Throws lora::Error for
// a missing file, a read failure or a line longer than kMaxJsonLineBytes.
void read_jsonl_blocks(const std::string& path, size_t block_bytes,
                       const std::function<void(const std::vector<RecordText>&)>& block);

// The elements of a file that holds one JSON array (read whole, at most kMaxJsonArrayBytes). Throws
// lora::Error naming the file for bytes that are not UTF-8, malformed JSON (with the line), a document that
// is not an array.
std::vector<nlohmann::json> read_json_array(const std::string& path);

}  // namespace lora::train
