// finetune's data: the training file (and --eval-data) read in its format, detected or given, as one long
// token stream for random windows (raw text, llm.c tokens) or as examples (JSONL/.json: text,
// prompt/completion, Alpaca, messages, ShareGPT) truncated or dropped to --max-seq, with a held-out set
// (--eval-data, --eval-fraction, or raw text's last 10%); and the flags that apply to one kind of data
// and not the other, refused with their names.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "models/chat/chat_template.h"
#include "models/tokenizer/tokenizer.h"
#include "tools/finetune_options.h"
#include "train/batch_source.h"
#include "train/data/load_examples.h"
#include "train/example_prep.h"
#include "train/window_source.h"

namespace lora::tools {

struct FinetuneData {
  std::string path, eval_path;     // the training file; --eval-data ("" : none)
  train::DetectedFormat detected;  // the training file's format and why
  bool examples = false;           // true: examples (JSONL/.json); false: a token stream cut into windows
  train::TokenSplit tokens;        // windows: training tokens, and held-out ones (the tail or --eval-data)
  std::vector<train::Example> train_examples, eval_examples;
  train::PrepareCounts train_counts, eval_counts;
  std::optional<chat::ChatTemplate> chat_template;  // the one that rendered the examples (alpaca, messages, sharegpt)
  std::string sha256, eval_sha256;                  // of the files as read
  std::string held_out;                             // where the held-out data comes from, for the terminal

  bool has_eval() const { return examples ? !eval_examples.empty() : !tokens.val.empty(); }
  // The longest row a batch can have: --seq for windows and packed rows, the longest example otherwise.
  int64_t longest_row(const FinetuneOptions& o) const;
  // Lines for the terminal: format and why, counts, truncation, the held-out set.
  std::string describe() const;
  // What identifies the data in checkpoints and across ranks.
  nlohmann::json identity() const;
};

// Whether reading `path` in `format` needs a tokenizer (every format but llm.c tokens).
bool needs_tokenizer(train::DataFormat format);

// Reads the data for `o`. `tokenizer()` is called only when a tokenizer is needed. Ids are checked against
// `vocab_size`. Throws lora::Error naming the flag, the file and what is wrong; flags that do not apply to
// the detected format (--packing on raw text, ...) are refused by name.
FinetuneData load_finetune_data(const FinetuneOptions& o, const std::string& data_path,
                                const std::function<const tokenizer::Tokenizer&()>& tokenizer, int64_t vocab_size);

// The training batches: random windows, or examples padded or packed, shuffled per epoch (this rank's shard).
std::unique_ptr<train::BatchSource> make_training_source(const FinetuneData& data, const FinetuneOptions& o,
                                                         train::Shard shard);

// The optimizer steps that make `epochs` passes over the data: ceil(micro-batches / grad_accum), the
// micro-batches of `rows_per_batch` rows (--batch x ranks) counted over each epoch's own plan for examples
// (packed epochs differ in rows).
int64_t steps_for_epochs(const train::BatchSource& source, double epochs, int64_t grad_accum, int64_t rows_per_batch);

}  // namespace lora::tools
