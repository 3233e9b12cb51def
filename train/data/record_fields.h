// The fields of one data record in each JSON format, checked: the keys each format needs, strings where
// strings are expected, and conversations that can be trained on (known roles, at most one system message
// and only first, no empty assistant turn, at least one assistant turn, not ending in a user turn). A key with
// training meaning that the record's format does not read (another format's fields, "system", "tools", "chosen",
// "rejected", "label", "images", ...) is refused, since the record would be trained without it; any other key
// (an id, metadata) is ignored. A turn holds only its role and content keys. Errors (lora::Error) start
// with `place` ("data file 'x.jsonl' line 3") and name the field: `"messages"[2]."role"`.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "models/chat/chat_template.h"

namespace lora::train {

// {"text": "..."}
const std::string& text_field(const nlohmann::json& record, const std::string& place);

// {"prompt": "...", "completion": "..."}
struct PromptCompletion {
  const std::string& prompt;
  const std::string& completion;
};
PromptCompletion prompt_completion_fields(const nlohmann::json& record, const std::string& place);

// {"instruction": "...", "input": "..." (optional; missing or null: none), "output": "..."}
// -> [user: instruction (+ "\n\n" + input when not empty), assistant: output]
chat::Conversation alpaca_conversation(const nlohmann::json& record, const std::string& place);

// {"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}
chat::Conversation messages_conversation(const nlohmann::json& record, const std::string& place);

// {"conversations": [{"from": "system" | "human" | "gpt", "value": "..."}, ...]} ("user" and "assistant"
// are read as "human" and "gpt").
chat::Conversation sharegpt_conversation(const nlohmann::json& record, const std::string& place);

}  // namespace lora::train
