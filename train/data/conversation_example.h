// A conversation as a training example: its render tokenized as transformers tokenizes it (added tokens
// split out of the text first, honouring their lstrip/rstrip; no BOS or EOS added: templates write their
// own), and a token trained when its first byte lies in one of render_for_training's spans.
#pragma once

#include "models/chat/chat_template.h"
#include "models/tokenizer/tokenizer.h"
#include "train/example.h"

namespace lora::train {

// train_on_inputs: every token trained. Throws lora::Error as render_for_training does.
Example conversation_example(const chat::ChatTemplate& chat_template, const tokenizer::Tokenizer& tokenizer,
                             const chat::Conversation& messages, bool train_on_inputs);

}  // namespace lora::train
