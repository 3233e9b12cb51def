// Data formats: their names, detecting a file's, and loading JSON records as tokenized Examples (in parallel,
// in file order).
#include "train/data/load_examples.h"

#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <fstream>
#include <limits>

#include "core/error.h"
#include "core/files.h"
#include "models/tokenizer/byte_unicode.h"
#include "train/data/conversation_example.h"
#include "train/data/json_records.h"
#include "train/data/record_fields.h"
#include "train/token_file.h"

namespace lora::train {
namespace {

using nlohmann::json;

constexpr std::pair<DataFormat, const char*> kNames[] = {
    {DataFormat::Auto, "auto"},
    {DataFormat::Raw, "raw"},
    {DataFormat::Tokens, "tokens"},
    {DataFormat::Text, "text"},
    {DataFormat::PromptCompletion, "prompt_completion"},
    {DataFormat::Alpaca, "alpaca"},
    {DataFormat::Messages, "messages"},
    {DataFormat::ShareGPT, "sharegpt"},
};

// The key that identifies each JSON format in a record, in the order auto-detection tries them.
constexpr std::pair<const char*, DataFormat> kIdentifyingKeys[] = {
    {"messages", DataFormat::Messages},           {"conversations", DataFormat::ShareGPT},
    {"instruction", DataFormat::Alpaca},          {"prompt", DataFormat::PromptCompletion},
    {"completion", DataFormat::PromptCompletion}, {"text", DataFormat::Text},
};

// The keys every record of a JSON format needs.
std::vector<const char*> required_keys(DataFormat format) {
  switch (format) {
    case DataFormat::Text:
      return {"text"};
    case DataFormat::PromptCompletion:
      return {"prompt", "completion"};
    case DataFormat::Alpaca:
      return {"instruction", "output"};
    case DataFormat::Messages:
      return {"messages"};
    case DataFormat::ShareGPT:
      return {"conversations"};
    default:
      return {};
  }
}

bool is_json_format(DataFormat f) {
  return f == DataFormat::Text || f == DataFormat::PromptCompletion || is_conversation_format(f);
}

// Whether the path's extension says JSON: .jsonl, .json, .ndjson (any case).
bool json_extension(const std::string& path) {
  const size_t dot = path.find_last_of("./");
  if (dot == std::string::npos || path[dot] != '.') return false;
  std::string ext = path.substr(dot + 1);
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext == "jsonl" || ext == "json" || ext == "ndjson";
}

// A record's keys for error messages: "a", "b" (at most 8, each cut to 40 bytes).
std::string keys_of(const json& record) {
  std::string keys;
  size_t n = 0;
  for (const auto& [key, value] : record.items()) {
    if (n == 8) return keys + ", ...";
    keys += fmt::format("{}\"{}{}\"", n++ ? ", " : "", key.substr(0, 40), key.size() > 40 ? "..." : "");
  }
  return n ? keys : "none";
}

std::string read_prefix(const std::string& path, size_t bytes) {
  std::ifstream in(path, std::ios::binary);
  LORA_CHECK(in.is_open(), "data file '{}': cannot open it", path);
  std::string prefix(bytes, '\0');
  in.read(prefix.data(), std::streamsize(bytes));
  prefix.resize(static_cast<size_t>(in.gcount()));
  return prefix;
}

// Where text that is not UTF-8 or holds NUL bytes starts in `prefix` (a character cut by the prefix's end
// allowed), or npos.
size_t binary_offset(std::string_view prefix, bool cut) {
  const size_t nul = prefix.substr(0, size_t{1} << 16).find('\0');
  if (nul != std::string_view::npos) return nul;
  size_t bad = tokenizer::find_invalid_utf8(prefix);
  if (bad != std::string_view::npos && cut && prefix.size() - bad < 4 &&
      tokenizer::find_invalid_utf8(prefix.substr(0, bad)) == std::string_view::npos) {
    bad = std::string_view::npos;  // a character that continues past the prefix
  }
  return bad;
}

struct Detection {
  DetectedFormat detected;
  JsonLayout layout = JsonLayout::Lines;
};

Detection detect(const std::string& path, DataFormat requested) {
  LORA_CHECK(path_exists(path), "data file '{}': no such file", path);
  LORA_CHECK(is_regular_file(path), "data file '{}': not a regular file", path);
  const std::string name = data_format_name(requested);
  const bool magic = has_llmc_magic(path);
  if (requested == DataFormat::Tokens) {
    LORA_CHECK(magic,
               "data file '{}': --format tokens, but it does not start with an llm.c token file's magic ({} or "
               "{})",
               path, kLlmcGpt2Magic, kLlmcLlama3Magic);
    return {{DataFormat::Tokens, "--format tokens"}};
  }
  if (magic) {
    LORA_CHECK(requested == DataFormat::Auto,
               "data file '{}': an llm.c token file (by its magic), not --format {} (use --format tokens or auto)",
               path, name);
    int32_t value = 0;
    std::ifstream(path, std::ios::binary).read(reinterpret_cast<char*>(&value), sizeof(value));
    return {{DataFormat::Tokens, fmt::format("an llm.c token file: magic {} ({})", value,
                                             value == kLlmcGpt2Magic ? "GPT-2 ids, uint16" : "Llama 3 ids, uint32")}};
  }
  if (requested == DataFormat::Raw) return {{DataFormat::Raw, "--format raw"}};

  // The file's first bytes, read in growing steps until they hold the first record whole (or the most a record
  // may take and a little more).
  std::string prefix;
  bool cut = false, incomplete = false;
  JsonLayout layout = JsonLayout::Lines;
  RecordText first;
  for (size_t want = size_t{1} << 16;; want = std::min(want * 16, kMaxJsonLineBytes + 8)) {
    prefix = read_prefix(path, want);
    cut = prefix.size() == want;
    layout = json_layout(prefix);
    first = first_record(prefix, layout);
    const size_t offset = first.line ? static_cast<size_t>(first.text.data() - prefix.data()) : 0;
    // (A line that does not open an object is not JSONL however it goes on.)
    incomplete = first.line == 0 || (layout == JsonLayout::Lines
                                         ? first.text.front() == '{' && prefix.find('\n', offset) == std::string::npos
                                         : offset + first.text.size() == prefix.size());
    if (!cut || !incomplete || want == kMaxJsonLineBytes + 8) break;
  }
  if (first.line == 0) {
    LORA_CHECK(!cut, "data file '{}': no record in its first {} MiB", path, kMaxJsonLineBytes >> 20);
    LORA_FAIL("data file '{}': no examples ({})", path,
              layout == JsonLayout::Array ? "an empty JSON array"
              : prefix.empty()            ? "an empty file"
                                          : "blank lines only");
  }
  const bool auto_detect = requested == DataFormat::Auto;
  if (auto_detect && !json_extension(path)) {
    const size_t bad = binary_offset(prefix, cut);
    LORA_CHECK(bad == std::string::npos,
               "data file '{}': binary data ({} at byte {}), not text, JSONL or an llm.c token file", path,
               prefix[bad] == '\0' ? "a NUL byte" : "bytes that are not UTF-8", bad + 1);
  }
  const std::string place = record_place(path, layout, first.line);
  // A first record that runs to the end of the most that was read is longer than any record may be.
  LORA_CHECK(!cut || !incomplete, "{}: longer than {} MiB{}", place, kMaxJsonLineBytes >> 20,
             layout == JsonLayout::Lines ? " (a record is one line; is this JSONL?)" : "");
  json record;
  try {
    record = parse_record(first.text, place);
  } catch (const Error& e) {
    if (!auto_detect || json_extension(path)) throw;
    return {{DataFormat::Raw, fmt::format("raw text: its first {} is not a JSON object",
                                          layout == JsonLayout::Lines ? "line" : "value")}};
  }
  const std::string what = layout == JsonLayout::Lines ? fmt::format("JSONL: the first record (line {})", first.line)
                                                       : std::string("a JSON array: its first record");
  if (!auto_detect) {
    LORA_CHECK(is_json_format(requested), "data format {} cannot be loaded here", name);
    for (const char* key : required_keys(requested)) {
      LORA_CHECK(record.contains(key), "{}: --format {} needs \"{}\" in each record; this one has {}", place, name, key,
                 keys_of(record));
    }
    return {{requested, fmt::format("--format {} ({} has its keys)", name, what)}, layout};
  }
  for (const auto& [key, format] : kIdentifyingKeys) {
    if (record.contains(key)) return {{format, fmt::format("{} has \"{}\"", what, key)}, layout};
  }
  LORA_FAIL(
      "{}: a record with none of the keys of a known format (it has {}); expected \"text\", \"prompt\" and "
      "\"completion\", \"instruction\" and \"output\", \"messages\" or \"conversations\" (--format raw reads "
      "the file as plain text)",
      place, keys_of(record));
}

// ---------------------------------------------------------------------------------------------------
// Tokenizing one record.

void append_eos(std::vector<int32_t>& ids, const tokenizer::Tokenizer& tokenizer) {
  const std::optional<int32_t> eos = tokenizer.eos_id();
  if (eos && (ids.empty() || ids.back() != *eos)) ids.push_back(*eos);
}

Example text_example(const std::string& text, const tokenizer::Tokenizer& tokenizer) {
  Example example;
  example.ids = tokenizer.encode(text, {.add_special_tokens = true, .parse_special_tokens = true});
  append_eos(example.ids, tokenizer);
  example.labels = example.ids;
  return example;
}

Example prompt_completion_example(const PromptCompletion& fields, const tokenizer::Tokenizer& tokenizer,
                                  bool train_on_inputs) {
  Example example;
  example.ids = tokenizer.encode(fields.prompt, {.add_special_tokens = true, .parse_special_tokens = true});
  const size_t prompt = example.ids.size();
  const std::vector<int32_t> completion =
      tokenizer.encode(fields.completion, {.add_special_tokens = false, .parse_special_tokens = true});
  example.ids.insert(example.ids.end(), completion.begin(), completion.end());
  append_eos(example.ids, tokenizer);
  example.labels = example.ids;
  if (!train_on_inputs) {
    std::fill(example.labels.begin(), example.labels.begin() + std::ptrdiff_t(prompt), kIgnoreLabel);
  }
  return example;
}

// A conversation record through the chat template (conversation_example.h).
Example conversation_record_example(const chat::Conversation& conversation, const tokenizer::Tokenizer& tokenizer,
                                    const ExampleOptions& options) {
  return conversation_example(*options.chat_template, tokenizer, conversation, options.train_on_inputs);
}

Example record_example(const json& record, DataFormat format, const tokenizer::Tokenizer& tokenizer,
                       const ExampleOptions& options, const std::string& place) {
  try {
    switch (format) {
      case DataFormat::Text:
        return text_example(text_field(record, place), tokenizer);
      case DataFormat::PromptCompletion:
        return prompt_completion_example(prompt_completion_fields(record, place), tokenizer, options.train_on_inputs);
      case DataFormat::Alpaca:
        return conversation_record_example(alpaca_conversation(record, place), tokenizer, options);
      case DataFormat::Messages:
        return conversation_record_example(messages_conversation(record, place), tokenizer, options);
      case DataFormat::ShareGPT:
        return conversation_record_example(sharegpt_conversation(record, place), tokenizer, options);
      default:
        LORA_FAIL("{}: data format {} is not JSON records", place, data_format_name(format));
    }
  } catch (const Error& e) {
    const std::string message = e.what();
    if (message.starts_with(place)) throw;
    LORA_FAIL("{}: {}", place, message);  // the tokenizer's or the template's error, placed
  }
}

// Turns `count` records into examples in parallel, placing each at out[first + i]; the error of the first
// record that fails (in file order) is thrown after the others stop.
template <class Record>
void examples_in_parallel(size_t count, const Record& record_at, std::vector<Example>& out) {
  const size_t first = out.size();
  out.resize(first + count);
  std::atomic<size_t> failed{std::numeric_limits<size_t>::max()};
  std::vector<std::string> errors(count);
#pragma omp parallel for schedule(dynamic, 8) if (count > 16)
  for (size_t i = 0; i < count; ++i) {
    if (i > failed.load(std::memory_order_relaxed)) continue;
    try {
      out[first + i] = record_at(i);
    } catch (const std::exception& e) {
      errors[i] = e.what();
      size_t seen = failed.load();
      while (i < seen && !failed.compare_exchange_weak(seen, i)) {
      }
    }
  }
  const size_t bad = failed.load();
  if (bad != std::numeric_limits<size_t>::max()) throw Error(errors[bad]);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------

DataFormat parse_data_format(const std::string& name) {
  for (const auto& [format, spelled] : kNames) {
    if (name == spelled) return format;
  }
  LORA_FAIL(
      "unknown data format '{}' (expected auto, raw, tokens, text, prompt_completion, alpaca, messages or "
      "sharegpt)",
      name);
}

std::string data_format_name(DataFormat format) {
  for (const auto& [f, spelled] : kNames) {
    if (f == format) return spelled;
  }
  return "?";
}

bool is_conversation_format(DataFormat format) {
  return format == DataFormat::Alpaca || format == DataFormat::Messages || format == DataFormat::ShareGPT;
}

DetectedFormat detect_data_format(const std::string& path, DataFormat requested) {
  return detect(path, requested).detected;
}

LoadedExamples load_examples(const std::string& path, const tokenizer::Tokenizer& tokenizer,
                             const ExampleOptions& options) {
  const Detection detection = detect(path, options.format);
  const DataFormat format = detection.detected.format;
  LORA_CHECK(is_json_format(format),
             "data file '{}': {}, which is not a file of examples (text, prompt/completion or conversations) but a "
             "stream of tokens cut into windows",
             path, detection.detected.why);
  LORA_CHECK(!is_conversation_format(format) || options.chat_template != nullptr,
             "data file '{}': {} records are conversations, which need a chat template to become tokens: pass "
             "--chat-template FILE (a Jinja file, e.g. data/chat_templates/chatml.jinja) or use a model folder that "
             "has one",
             path, data_format_name(format));
  LoadedExamples loaded{format, {}};
  if (detection.layout == JsonLayout::Lines) {
    read_jsonl_blocks(path, size_t{8} << 20, [&](const std::vector<RecordText>& lines) {
      examples_in_parallel(
          lines.size(),
          [&](size_t i) {
            const std::string place = record_place(path, JsonLayout::Lines, lines[i].line);
            Example example = record_example(parse_record(lines[i].text, place), format, tokenizer, options, place);
            example.line = lines[i].line;
            return example;
          },
          loaded.examples);
    });
  } else {
    const std::vector<json> records = read_json_array(path);
    examples_in_parallel(
        records.size(),
        [&](size_t i) {
          const std::string place = record_place(path, JsonLayout::Array, int64_t(i) + 1);
          LORA_CHECK(records[i].is_object(), "{}: a JSON {}, not an object (each record is one {{...}})", place,
                     records[i].type_name());
          Example example = record_example(records[i], format, tokenizer, options, place);
          example.line = int64_t(i) + 1;
          return example;
        },
        loaded.examples);
  }
  LORA_CHECK(!loaded.examples.empty(), "data file '{}': no examples", path);
  return loaded;
}

}  // namespace lora::train
