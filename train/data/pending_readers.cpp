// Placeholders, weak symbols, for the JSONL reader (train/data/load_examples.h) and chat templates
// (models/chat/chat_template.h) until their implementations are merged: each refuses clearly, so that
// finetune builds and its raw-text and token-file paths run. Remove this file once both are merged.
#include "models/chat/chat_template.h"
#include "train/data/load_examples.h"

#include "core/error.h"
#include "train/token_file.h"

#define LORA_PENDING __attribute__((weak))

namespace lora::train {

LORA_PENDING DataFormat parse_data_format(const std::string& name) {
  const char* names[] = {"auto", "raw", "tokens", "text", "prompt_completion", "alpaca", "messages", "sharegpt"};
  for (int i = 0; i < 8; ++i) {
    if (name == names[i]) return DataFormat(i);
  }
  LORA_FAIL("--format '{}': expected auto, raw, tokens, text, prompt_completion, alpaca, messages or sharegpt", name);
}

LORA_PENDING std::string data_format_name(DataFormat format) {
  const char* names[] = {"auto", "raw", "tokens", "text", "prompt_completion", "alpaca", "messages", "sharegpt"};
  return names[int(format)];
}

LORA_PENDING DetectedFormat detect_data_format(const std::string& path, DataFormat requested) {
  if (requested != DataFormat::Auto) return {requested, "as given by --format"};
  if (has_llmc_magic(path)) return {DataFormat::Tokens, "an llm.c token file (its magic number)"};
  if (path.ends_with(".jsonl") || path.ends_with(".json")) {
    LORA_FAIL("'{}': JSONL and .json datasets are not readable in this build (train/data/load_examples is not built)", path);
  }
  return {DataFormat::Raw, "neither an llm.c token file nor JSONL: raw text"};
}

LORA_PENDING LoadedExamples load_examples(const std::string& path, const tokenizer::Tokenizer&, const ExampleOptions&) {
  LORA_FAIL("'{}': JSONL and .json datasets are not readable in this build (train/data/load_examples is not built)", path);
}

}  // namespace lora::train

namespace lora::chat {

struct ChatTemplate::Impl {
  std::string source, bos, eos, origin;
};

LORA_PENDING ChatTemplate::ChatTemplate(std::string source, std::string bos_token, std::string eos_token,
                                        std::string origin, TemplateLimits)
    : impl_(std::make_unique<Impl>(Impl{std::move(source), std::move(bos_token), std::move(eos_token), std::move(origin)})) {
  LORA_FAIL("{}: chat templates are not readable in this build (models/chat is not built)", impl_->origin);
}
LORA_PENDING std::optional<ChatTemplate> ChatTemplate::from_model_folder(const std::string&) { return std::nullopt; }
LORA_PENDING ChatTemplate ChatTemplate::from_file(const std::string& path, const std::string&) {
  LORA_FAIL("--chat-template '{}': chat templates are not readable in this build (models/chat is not built)", path);
}
LORA_PENDING std::string ChatTemplate::render(const Conversation&, bool) const {
  LORA_FAIL("chat templates are not readable in this build");
}
LORA_PENDING const std::string& ChatTemplate::source() const { return impl_->source; }
LORA_PENDING const std::string& ChatTemplate::origin() const { return impl_->origin; }
LORA_PENDING const std::string& ChatTemplate::eos_token() const { return impl_->eos; }
LORA_PENDING const std::string& ChatTemplate::bos_token() const { return impl_->bos; }
LORA_PENDING ChatTemplate::ChatTemplate(const ChatTemplate& other) : impl_(std::make_unique<Impl>(*other.impl_)) {}
LORA_PENDING ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
LORA_PENDING ChatTemplate& ChatTemplate::operator=(const ChatTemplate& other) {
  impl_ = std::make_unique<Impl>(*other.impl_);
  return *this;
}
LORA_PENDING ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;
LORA_PENDING ChatTemplate::~ChatTemplate() = default;

}  // namespace lora::chat
