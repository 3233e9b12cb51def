// Reading the data people fine-tune on: detecting a file's format, and turning JSONL (or a .json array) of
// text, prompt/completion, Alpaca, OpenAI messages or ShareGPT conversations into Examples (ids + labels,
// with the prompt and user turns masked unless train_on_inputs). Raw text and llm.c token files are not
// examples: they are cut into windows (train/window_source.h).
#pragma once

#include <string>
#include <vector>

#include "models/chat/chat_template.h"
#include "models/tokenizer/tokenizer.h"
#include "train/example.h"

namespace lora::train {

enum class DataFormat { Auto, Raw, Tokens, Text, PromptCompletion, Alpaca, Messages, ShareGPT };

// "auto", "raw", "tokens", "text", "prompt_completion", "alpaca", "messages", "sharegpt".
DataFormat parse_data_format(const std::string& name);  // throws lora::Error listing the names
std::string data_format_name(DataFormat format);
// Alpaca, Messages and ShareGPT: records that become tokens through a chat template.
bool is_conversation_format(DataFormat format);

// What `path` holds: an llm.c token file by its magic (Tokens), JSONL or a .json array by the first record's
// keys, anything else Raw. `requested` other than Auto is returned as it is after checking it fits the file.
struct DetectedFormat {
  DataFormat format;
  std::string why;  // for the user: "JSONL: the first line has \"messages\""
};
DetectedFormat detect_data_format(const std::string& path, DataFormat requested = DataFormat::Auto);

struct ExampleOptions {
  DataFormat format = DataFormat::Auto;               // Text, PromptCompletion, Alpaca, Messages, ShareGPT, or Auto
  bool train_on_inputs = false;                       // true: every token is trained (no masking)
  const chat::ChatTemplate* chat_template = nullptr;  // needed by Alpaca, Messages and ShareGPT
};

struct LoadedExamples {
  DataFormat format;              // the one used
  std::vector<Example> examples;  // in file order; Example::line is the record's line (JSONL) or index + 1
};

// Throws lora::Error naming the file and `line N` (and the field) for malformed JSON, a record that is not an
// object, missing or wrong-typed fields, unknown roles, an empty assistant turn, a conversation ending in a
// user turn, a template error; "no examples" for a file with none.
LoadedExamples load_examples(const std::string& path, const tokenizer::Tokenizer& tokenizer,
                             const ExampleOptions& options);

}  // namespace lora::train
