// Fuzzes the data-file reader: format detection, JSONL and JSON-array records, each format's fields and
// their tokenization (GPT-2, conversations through a ChatML template), on arbitrary bytes. Every example must
// come back with as many labels as ids, each label either ignored or its id; anything else must be a
// lora::Error.
#include <cstdlib>

#include "core/error.h"
#include "fuzz/fuzz_util.h"
#include "models/chat/chat_template.h"
#include "models/tokenizer/gpt2_tokenizer.h"
#include "train/data/load_examples.h"

namespace {

void check(const lora::train::LoadedExamples& loaded) {
  if (loaded.examples.empty()) std::abort();  // "no examples" is an error, never an empty result
  int64_t line = 0;
  for (const lora::train::Example& e : loaded.examples) {
    if (e.ids.size() != e.labels.size() || e.line <= line) std::abort();
    line = e.line;
    for (size_t i = 0; i < e.ids.size(); ++i) {
      if (e.labels[i] != lora::train::kIgnoreLabel && e.labels[i] != e.ids[i]) std::abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using lora::train::DataFormat;
  static const auto tokenizer = lora::tokenizer::GPT2Tokenizer::load_default();
  // data/chat_templates/chatml.jinja, so that conversations are rendered and masked too.
  static const lora::chat::ChatTemplate chatml(
      "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
      "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
      "", "<|im_end|>", "chatml");
  lora::fuzz::MemoryFile file(data, size);
  try {
    (void)lora::train::detect_data_format(file.path());
  } catch (const lora::Error&) {
  }
  // Auto, then a format chosen by the input's last byte (so that each format's checks see every input).
  const DataFormat chosen = static_cast<DataFormat>(size ? data[size - 1] % 8 : 0);
  for (DataFormat format : {DataFormat::Auto, chosen}) {
    for (bool train_on_inputs : {false, true}) {
      try {
        check(lora::train::load_examples(
            file.path(), tokenizer, {.format = format, .train_on_inputs = train_on_inputs, .chat_template = &chatml}));
      } catch (const lora::Error&) {
      }
    }
  }
  return 0;
}
