// ChatTemplate: a model's chat template (Jinja, as transformers' apply_chat_template renders it), rendered by
// the vendored minja engine (third_party/minja), sandboxed: bounded output and time, raise_exception turned
// into a lora::Error that shows the template's own message.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace lora::chat {

// One turn of a conversation, OpenAI style: role is "system", "user", "assistant" (or what a template knows).
struct Message {
  std::string role;
  std::string content;
};
using Conversation = std::vector<Message>;

struct TemplateLimits {
  size_t max_output_bytes = size_t{16} << 20;  // a render longer than this is refused
  double max_seconds = 5.0;                    // a render that runs longer is stopped and refused
};

class ChatTemplate {
 public:
  // `source`: the Jinja text. bos_token / eos_token: the strings the template sees under those names.
  // `origin` names where it came from in messages ("models/x/tokenizer_config.json"). Throws lora::Error when
  // the template does not parse.
  ChatTemplate(std::string source, std::string bos_token, std::string eos_token, std::string origin,
               TemplateLimits limits = {});

  // A model folder's template: chat_template.jinja (transformers 5), else tokenizer_config.json's
  // "chat_template" (a string, or a list of {name, template} of which "default" is taken); bos/eos from
  // tokenizer_config.json. nullopt when the folder has neither.
  static std::optional<ChatTemplate> from_model_folder(const std::string& folder);
  // --chat-template FILE; bos/eos from `tokenizer_folder`'s tokenizer_config.json when given and present.
  static ChatTemplate from_file(const std::string& path, const std::string& tokenizer_folder = "");

  // The conversation rendered as transformers renders it. Throws lora::Error naming origin() on
  // raise_exception (its message as written), an unknown filter, output or time over the limits.
  std::string render(const Conversation& messages, bool add_generation_prompt) const;

  const std::string& source() const;
  const std::string& origin() const;
  const std::string& eos_token() const;
  const std::string& bos_token() const;

  ChatTemplate(const ChatTemplate&);
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(const ChatTemplate&);
  ChatTemplate& operator=(ChatTemplate&&) noexcept;
  ~ChatTemplate();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The character spans of a rendered conversation that training learns (the assistant turns): for assistant
// message i, from the end of render(messages[:i], add_generation_prompt=true) to the end of
// render(messages[:i+1]) (its end-of-turn marker included), with the Phi-3.5 exception (a render that closes
// with eos_token only when it is the whole conversation: the span stops before that eos_token).
struct RenderedConversation {
  std::string text;                                // render(messages, add_generation_prompt=false)
  std::vector<std::pair<size_t, size_t>> trained;  // [begin, end) byte offsets into text, in order
};
// Throws lora::Error when a prefix render is not a prefix of the whole (a template whose earlier turns depend
// on later ones cannot be masked this way), or when the conversation has no assistant turn.
RenderedConversation render_for_training(const ChatTemplate& chat_template, const Conversation& messages);

}  // namespace lora::chat
