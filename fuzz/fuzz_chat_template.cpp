// Fuzzes chat templates: the input is a Jinja template's source, parsed and rendered (with and without the
// generation prompt) on a fixed conversation under small limits, then masked by render_for_training. Every
// outcome must be a render or a lora::Error: no crash, no hang (the time limit), no unbounded memory (the size
// limit).
#include <cstdint>
#include <string>

#include "core/error.h"
#include "models/chat/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return 0;
  const std::string source(reinterpret_cast<const char*>(data), size);
  // Short, so that render_for_training's prefix renders stay few (each input is parsed once, rendered 6 times).
  const lora::chat::Conversation conversation = {
      {"system", "Be brief."},
      {"user", "Hi \xc3\xa9 <s> {{ x }}"},
      {"assistant", "Hello!"},
  };
  try {
    const lora::chat::ChatTemplate chat_template(source, "<s>", "</s>", "fuzz.jinja",
                                                 {.max_output_bytes = 64 * 1024, .max_seconds = 0.25});
    for (const bool generation_prompt : {false, true}) {
      try {
        (void)chat_template.render(conversation, generation_prompt);
      } catch (const lora::Error&) {
      }
    }
    (void)lora::chat::render_for_training(chat_template, conversation);
  } catch (const lora::Error&) {
  }
  return 0;
}
