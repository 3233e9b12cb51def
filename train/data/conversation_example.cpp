// conversation_example: a conversation's render, tokenized with offsets, and its labels from the trained spans.
#include "train/data/conversation_example.h"

#include <algorithm>

#include "core/error.h"

namespace lora::train {

Example conversation_example(const chat::ChatTemplate& chat_template, const tokenizer::Tokenizer& tokenizer,
                             const chat::Conversation& messages, bool train_on_inputs) {
  const chat::RenderedConversation rendered = chat::render_for_training(chat_template, messages);
  // As apply_chat_template(tokenize=True): no BOS/EOS added (the template writes its own), special tokens
  // in the text become their ids.
  tokenizer::Encoding encoding =
      tokenizer.encode_with_offsets(rendered.text, {.add_special_tokens = false, .parse_special_tokens = true});
  LORA_CHECK(encoding.offsets.size() == encoding.ids.size(), "{}: {} offsets for {} tokens", tokenizer.describe(),
             encoding.offsets.size(), encoding.ids.size());
  Example example;
  example.labels.assign(encoding.ids.size(), kIgnoreLabel);
  const auto& spans = rendered.trained;  // in order, disjoint
  for (size_t i = 0; i < encoding.ids.size(); ++i) {
    const size_t offset = encoding.offsets[i];
    // The first span that ends after the token's first byte: trained when it also begins at or before it.
    const auto it = std::upper_bound(spans.begin(), spans.end(), offset,
                                     [](size_t o, const std::pair<size_t, size_t>& s) { return o < s.second; });
    const bool trained = it != spans.end() && it->first <= offset;
    if (train_on_inputs || trained) example.labels[i] = encoding.ids[i];
  }
  example.ids = std::move(encoding.ids);
  return example;
}

}  // namespace lora::train
