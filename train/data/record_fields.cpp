// The fields of data records, checked, for each JSON format.
#include "train/data/record_fields.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <initializer_list>
#include <string_view>

#include "core/error.h"

namespace lora::train {
namespace {

using nlohmann::json;

const std::string& string_field(const json& record, const char* key, const std::string& place, const char* shape) {
  const auto it = record.find(key);
  LORA_CHECK(it != record.end(), "{}: no \"{}\" (a record of this format is {})", place, key, shape);
  LORA_CHECK(it->is_string(), "{}: \"{}\" is {} {}; expected a string", place, key,
             it->is_array() || it->is_object() ? "an" : "a", it->type_name());
  return it->get_ref<const std::string&>();
}

// How one conversation format spells its list and its turns.
struct TurnSpelling {
  const char* list;      // "messages"
  const char* role_key;  // "role"
  const char* text_key;  // "content"
  // Each accepted role name and the role it stands for.
  std::array<std::pair<std::string_view, std::string_view>, 5> roles;
  const char* expected;  // the names listed in errors
};

constexpr TurnSpelling kMessages{
    "messages",
    "role",
    "content",
    {{{"system", "system"}, {"user", "user"}, {"assistant", "assistant"}, {"", ""}, {"", ""}}},
    "\"system\", \"user\" or \"assistant\""};
constexpr TurnSpelling kShareGPT{
    "conversations",
    "from",
    "value",
    {{{"system", "system"}, {"human", "user"}, {"gpt", "assistant"}, {"user", "user"}, {"assistant", "assistant"}}},
    "\"system\", \"human\" or \"gpt\" (or \"user\", \"assistant\")"};

const char* article(const json& value) {
  return value.is_array() || value.is_object() ? "an" : "a";
}

// Keys that carry training meaning in the dataset formats people fine-tune on: another format's fields, a
// system prompt beside the record's own, tool definitions, preference pairs and KTO labels, images. A record that
// holds one its format does not read would be trained without it, silently, so it is refused. Any other key (an
// id, a source, metadata) is ignored.
constexpr std::string_view kMeaningfulKeys[] = {
    "text",   "prompt",        "completion", "instruction", "input",  "output",   "messages", "conversations",
    "system", "system_prompt", "tools",      "functions",   "chosen", "rejected", "label",    "images",
};

// Refuses a key of kMeaningfulKeys that `format` (reading `read`) does not read.
void refuse_unread_keys(const json& record, const std::string& place, const char* format,
                        std::initializer_list<std::string_view> read) {
  for (const auto& [key, value] : record.items()) {
    if (std::ranges::find(read, key) != read.end()) continue;
    if (std::ranges::find(kMeaningfulKeys, key) == std::end(kMeaningfulKeys)) continue;
    std::string reads;
    for (const std::string_view r : read) reads += fmt::format("{}\"{}\"", reads.empty() ? "" : ", ", r);
    LORA_FAIL(
        "{}: \"{}\" is not read by the {} format, which trains on {} alone; the record would be trained without "
        "it (remove the key from the records, or give --format for the format that reads it)",
        place, key, format, reads);
  }
}

// A conversation that can be trained on: at most one system message and only first, at least one assistant
// turn, none of them empty, and a reply after the last user turn.
void check_conversation(const chat::Conversation& turns, const std::string& place, const TurnSpelling& s) {
  LORA_CHECK(!turns.empty(), "{}: \"{}\" is empty", place, s.list);
  bool any_assistant = false;
  for (size_t i = 0; i < turns.size(); ++i) {
    const chat::Message& m = turns[i];
    if (m.role == "system") {
      LORA_CHECK(i == 0,
                 "{}: \"{}\"[{}] is a system message after the first turn (a system message may only come "
                 "first, once)",
                 place, s.list, i);
    } else if (m.role == "assistant") {
      LORA_CHECK(!m.content.empty(), "{}: \"{}\"[{}].\"{}\" is an empty assistant turn (nothing to train)", place,
                 s.list, i, s.text_key);
      any_assistant = true;
    }
  }
  LORA_CHECK(any_assistant, "{}: \"{}\" has no assistant turn (nothing to train)", place, s.list);
  LORA_CHECK(turns.back().role != "user",
             "{}: \"{}\" ends with a user turn (\"{}\"[{}]) that has no reply; end a conversation with the assistant",
             place, s.list, s.list, turns.size() - 1);
}

chat::Conversation turns_of(const json& record, const std::string& place, const TurnSpelling& s) {
  const auto list = record.find(s.list);
  LORA_CHECK(list != record.end(), "{}: no \"{}\"", place, s.list);
  LORA_CHECK(list->is_array(), "{}: \"{}\" is {} {}; expected an array of {{\"{}\": ..., \"{}\": ...}}", place, s.list,
             article(*list), list->type_name(), s.role_key, s.text_key);
  chat::Conversation turns;
  turns.reserve(list->size());
  for (size_t i = 0; i < list->size(); ++i) {
    const json& turn = (*list)[i];
    LORA_CHECK(turn.is_object(), "{}: \"{}\"[{}] is {} {}; expected an object {{\"{}\": ..., \"{}\": ...}}", place,
               s.list, i, article(turn), turn.type_name(), s.role_key, s.text_key);
    for (const auto& [key, value] : turn.items()) {
      LORA_CHECK(key == s.role_key || key == s.text_key,
                 "{}: \"{}\"[{}] has \"{}\", which is not read (a turn holds \"{}\" and \"{}\" only)", place, s.list, i,
                 key, s.role_key, s.text_key);
    }
    const auto role = turn.find(s.role_key);
    const auto text = turn.find(s.text_key);
    LORA_CHECK(role != turn.end(), "{}: \"{}\"[{}] has no \"{}\"", place, s.list, i, s.role_key);
    LORA_CHECK(text != turn.end(), "{}: \"{}\"[{}] has no \"{}\"", place, s.list, i, s.text_key);
    LORA_CHECK(role->is_string(), "{}: \"{}\"[{}].\"{}\" is {} {}; expected a string: {}", place, s.list, i, s.role_key,
               article(*role), role->type_name(), s.expected);
    LORA_CHECK(text->is_string(), "{}: \"{}\"[{}].\"{}\" is {} {}; expected a string", place, s.list, i, s.text_key,
               article(*text), text->type_name());
    const std::string& name = role->get_ref<const std::string&>();
    std::string_view mapped;
    for (const auto& [spelled, meaning] : s.roles) {
      if (!spelled.empty() && name == spelled) mapped = meaning;
    }
    if (mapped.empty()) {
      // The name as written, cut short and kept printable.
      std::string shown = name.substr(0, 40);
      for (char& c : shown) {
        if (static_cast<unsigned char>(c) < 0x20) c = '?';
      }
      LORA_FAIL("{}: \"{}\"[{}].\"{}\" is \"{}\"{}, an unknown role; expected {}", place, s.list, i, s.role_key, shown,
                name.size() > 40 ? "..." : "", s.expected);
    }
    turns.push_back({std::string(mapped), text->get_ref<const std::string&>()});
  }
  check_conversation(turns, place, s);
  return turns;
}

}  // namespace

const std::string& text_field(const json& record, const std::string& place) {
  const std::string& text = string_field(record, "text", place, "{\"text\": \"...\"}");
  refuse_unread_keys(record, place, "text", {"text"});
  return text;
}

PromptCompletion prompt_completion_fields(const json& record, const std::string& place) {
  const char* shape = "{\"prompt\": \"...\", \"completion\": \"...\"}";
  const std::string& prompt = string_field(record, "prompt", place, shape);
  const std::string& completion = string_field(record, "completion", place, shape);
  refuse_unread_keys(record, place, "prompt_completion", {"prompt", "completion"});
  return {prompt, completion};
}

chat::Conversation alpaca_conversation(const json& record, const std::string& place) {
  const char* shape = "{\"instruction\": \"...\", \"input\": \"...\", \"output\": \"...\"}";
  const std::string& instruction = string_field(record, "instruction", place, shape);
  const std::string& output = string_field(record, "output", place, shape);
  refuse_unread_keys(record, place, "alpaca", {"instruction", "input", "output"});
  std::string user = instruction;
  const auto input = record.find("input");
  if (input != record.end() && !input->is_null()) {
    LORA_CHECK(input->is_string(), "{}: \"input\" is {} {}; expected a string (or null, or no \"input\")", place,
               article(*input), input->type_name());
    const std::string& text = input->get_ref<const std::string&>();
    if (!text.empty()) user += "\n\n" + text;
  }
  LORA_CHECK(!output.empty(), "{}: \"output\" is empty (nothing to train)", place);
  return {{"user", std::move(user)}, {"assistant", output}};
}

chat::Conversation messages_conversation(const json& record, const std::string& place) {
  chat::Conversation turns = turns_of(record, place, kMessages);
  refuse_unread_keys(record, place, "messages", {"messages"});
  return turns;
}

chat::Conversation sharegpt_conversation(const json& record, const std::string& place) {
  chat::Conversation turns = turns_of(record, place, kShareGPT);
  refuse_unread_keys(record, place, "sharegpt", {"conversations"});
  return turns;
}

}  // namespace lora::train
