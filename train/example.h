// Example: one training example as the model reads it, whatever file format it came from (raw text windows,
// llm.c token files, JSONL text, prompt/completion, Alpaca, chat messages, ShareGPT). Readers in
// train/data/ make them; BatchSources (train/batch_source.h) turn them into batches.
#pragma once

#include <cstdint>
#include <vector>

namespace lora::train {

// The label of a position that is not trained (PyTorch's and transformers' ignore_index).
inline constexpr int32_t kIgnoreLabel = -100;

struct Example {
  // The tokens, as the model reads them.
  std::vector<int32_t> ids;
  // One per id, Hugging Face's convention (unshifted): labels[i] == ids[i] where token i is trained (it is
  // predicted from ids[0..i-1]), kIgnoreLabel where it is not (a prompt, a user turn, padding). Batching
  // shifts them: the target at position t is labels[t + 1].
  std::vector<int32_t> labels;
  // Where it came from, for error messages and reports: its 1-based line in a JSONL file (0: not a line).
  int64_t line = 0;
};

}  // namespace lora::train
