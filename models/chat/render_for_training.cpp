// render_for_training: the spans of a rendered conversation that training learns (the assistant turns), found
// by rendering each prefix of the conversation, as TRL and axolotl mask a template without {% generation %}.
#include "core/error.h"
#include "models/chat/chat_template.h"

namespace lora::chat {

namespace {

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.size() >= prefix.size() && text.compare(0, prefix.size(), prefix) == 0;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

RenderedConversation render_for_training(const ChatTemplate& chat_template, const Conversation& messages) {
  RenderedConversation out;
  out.text = chat_template.render(messages, /*add_generation_prompt=*/false);
  const std::string& eos = chat_template.eos_token();
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role != "assistant") continue;
    const Conversation before(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(i));
    const Conversation through(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(i) + 1);
    const std::string prompt = chat_template.render(before, /*add_generation_prompt=*/true);
    std::string turn = chat_template.render(through, /*add_generation_prompt=*/false);
    // Phi-3.5 closes a render with eos_token where the conversation ends (and only there: the generation
    // prompt takes its place): that eos_token closes the conversation, not the assistant turn, so the span
    // stops before it, the last turn's included. A template that writes eos_token at the end of turns (Llama
    // 3's <|eot_id|>, Mistral's </s>) keeps it in the span.
    if (!eos.empty() && ends_with(turn, eos)) {
      const std::string closed = chat_template.render(before, /*add_generation_prompt=*/false);
      if (ends_with(closed, eos) && !starts_with(prompt, closed)) turn.resize(turn.size() - eos.size());
    }
    LORA_CHECK(starts_with(turn, prompt),
               "chat template of {}: the render of messages [0, {}) with the generation prompt is not a prefix of "
               "the render of messages [0, {}]: its assistant turn {} cannot be located, so it cannot be masked",
               chat_template.origin(), i, i, i);
    LORA_CHECK(starts_with(out.text, turn),
               "chat template of {}: the render of messages [0, {}] is not a prefix of the whole conversation's "
               "render (the template writes earlier turns differently once later ones follow), so assistant "
               "turn {} cannot be masked",
               chat_template.origin(), i, i);
    LORA_CHECK(out.trained.empty() || prompt.size() >= out.trained.back().second,
               "chat template of {}: assistant turn {} begins before the previous one ends", chat_template.origin(), i);
    if (turn.size() > prompt.size()) out.trained.emplace_back(prompt.size(), turn.size());
  }
  LORA_CHECK(!out.trained.empty(),
             "chat template of {}: the conversation ({} messages) has no assistant turn with text to train on",
             chat_template.origin(), messages.size());
  return out;
}

}  // namespace lora::chat
