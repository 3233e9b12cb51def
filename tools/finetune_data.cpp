// finetune's data: formats, examples, the held-out set, and the refusals of flags that do not apply.
#include "tools/finetune_data.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "core/files.h"
#include "core/sha256.h"
#include "train/example_source.h"
#include "train/token_stream.h"

namespace lora::tools {
namespace {

using train::DataFormat;

bool is_example_format(DataFormat f) {
  return f != DataFormat::Raw && f != DataFormat::Tokens && f != DataFormat::Auto;
}
bool needs_chat_template(DataFormat f) {
  return f == DataFormat::Alpaca || f == DataFormat::Messages || f == DataFormat::ShareGPT;
}

// The flags that shape examples mean nothing to a token stream cut into windows.
void refuse_example_flags(const FinetuneOptions& o, const train::DetectedFormat& d, const std::string& path) {
  const std::string what = fmt::format("--data '{}' is {} ({})", path, train::data_format_name(d.format), d.why);
  const std::string windows = "it is cut into windows of --seq tokens, every token trained";
  LORA_CHECK(!o.packing, "--packing packs whole examples into rows, but {}: {}. Give JSONL examples (--format)", what,
             windows);
  LORA_CHECK(!o.train_on_inputs, "--train-on-inputs unmasks the prompts of examples, but {}: {}", what, windows);
  LORA_CHECK(o.max_seq == 0, "--max-seq truncates examples, but {}: {} (use --seq)", what, windows);
  LORA_CHECK(!o.drop_long, "--drop-long drops long examples, but {}: {}", what, windows);
  LORA_CHECK(o.chat_template.empty(), "--chat-template renders conversations, but {}", what);
  LORA_CHECK(o.eval_fraction == 0,
             "--eval-fraction holds out whole examples, but {}: its last 10% is held out (or give --eval-data FILE)",
             what);
}

// The chat template for formats that need one: --chat-template, else the model folder's.
std::optional<chat::ChatTemplate> chat_template_for(const FinetuneOptions& o, DataFormat format) {
  namespace fs = std::filesystem;
  const std::string folder = o.weights.empty()         ? ""
                             : is_directory(o.weights) ? o.weights
                                                       : fs::path(o.weights).parent_path().string();
  if (!o.chat_template.empty()) {
    LORA_CHECK(needs_chat_template(format),
               "--chat-template applies to alpaca, messages and sharegpt data; this data is {} (its text is trained "
               "as it is)",
               train::data_format_name(format));
    return chat::ChatTemplate::from_file(o.chat_template, o.tokenizer.empty() ? folder : o.tokenizer);
  }
  if (!needs_chat_template(format)) return std::nullopt;
  std::optional<chat::ChatTemplate> t;
  if (!folder.empty()) t = chat::ChatTemplate::from_model_folder(folder);
  LORA_CHECK(t.has_value(),
             "{} data is rendered with a chat template, and {}: give --chat-template FILE (a Jinja "
             "template, e.g. a model's chat_template.jinja)",
             train::data_format_name(format),
             folder.empty() ? "there is no model folder (--weights) to take one from"
                            : fmt::format("the model folder '{}' has none (no chat_template.jinja, no chat_template in "
                                          "tokenizer_config.json)",
                                          folder));
  return t;
}

// The format of `path`, errors prefixed with the flag that named the file.
train::DetectedFormat detect(const std::string& flag, const std::string& path, DataFormat requested) {
  LORA_CHECK(is_regular_file(path), "{} '{}': {}", flag, path, not_a_file_reason(path));
  try {
    return train::detect_data_format(path, requested);
  } catch (const Error& e) {
    LORA_FAIL("{}: {}", flag, e.what());
  }
}

void check_ids(const std::vector<int32_t>& ids, int64_t vocab_size, const std::string& what) {
  for (int32_t id : ids) {
    LORA_CHECK(id >= 0 && id < vocab_size, "{}: token {} is outside the model's vocabulary of {}", what, id,
               vocab_size);
  }
}

std::vector<train::Example> read_examples(const std::string& path, const std::string& flag, DataFormat format,
                                          const FinetuneOptions& o, const tokenizer::Tokenizer& tok,
                                          const chat::ChatTemplate* chat_template, int64_t vocab_size) {
  train::ExampleOptions options;
  options.format = format;
  options.train_on_inputs = o.train_on_inputs;
  options.chat_template = chat_template;
  train::LoadedExamples loaded = train::load_examples(path, tok, options);
  for (const train::Example& e : loaded.examples) {
    check_ids(e.ids, vocab_size, fmt::format("{} '{}' line {}", flag, path, e.line));
  }
  return std::move(loaded.examples);
}

}  // namespace

bool needs_tokenizer(DataFormat format) {
  return format != DataFormat::Tokens;
}

int64_t FinetuneData::longest_row(const FinetuneOptions& o) const {
  if (!examples || o.packing) return o.seq;
  int64_t longest = 0;
  for (const auto* set : {&train_examples, &eval_examples}) {
    for (const train::Example& e : *set) longest = std::max(longest, int64_t(e.ids.size()));
  }
  return longest;
}

std::string FinetuneData::describe() const {
  std::string out =
      fmt::format("data: {} read as {} ({})\n", path, train::data_format_name(detected.format), detected.why);
  if (!examples) {
    return out + fmt::format("data: {} training tokens, {} held out ({})\n", tokens.train.size(), tokens.val.size(),
                             held_out);
  }
  int64_t train_tokens = 0;
  for (const train::Example& e : train_examples) train_tokens += int64_t(e.ids.size());
  out += fmt::format("data: {}; {} examples ({} tokens) for training\n", train_counts.describe(), train_examples.size(),
                     train_tokens);
  if (chat_template) out += fmt::format("chat template: {}\n", chat_template->origin());
  out += fmt::format("held out: {}\n", held_out);
  return out;
}

nlohmann::json FinetuneData::identity() const {
  nlohmann::json j = {{"path", path}, {"sha256", sha256}, {"format", train::data_format_name(detected.format)}};
  if (!eval_path.empty()) j["eval_data"] = {{"path", eval_path}, {"sha256", eval_sha256}};
  if (examples) {
    j["train_examples"] = train_examples.size();
    j["held_out_examples"] = eval_examples.size();
    int64_t tokens_in = 0;
    for (const train::Example& e : train_examples) tokens_in += int64_t(e.ids.size());
    j["train_tokens"] = tokens_in;
  } else {
    j["train_tokens"] = tokens.train.size();
    j["held_out_tokens"] = tokens.val.size();
  }
  return j;
}

FinetuneData load_finetune_data(const FinetuneOptions& o, const std::string& data_path,
                                const std::function<const tokenizer::Tokenizer&()>& tokenizer, int64_t vocab_size) {
  FinetuneData d;
  d.path = data_path;
  d.eval_path = o.eval_data;
  const DataFormat requested = train::parse_data_format(o.format);
  d.detected = detect("--data", data_path, requested);
  d.examples = is_example_format(d.detected.format);
  d.sha256 = sha256_file(data_path);
  if (!o.eval_data.empty()) {
    LORA_CHECK(is_regular_file(o.eval_data), "--eval-data '{}': {}", o.eval_data, not_a_file_reason(o.eval_data));
    d.eval_sha256 = sha256_file(o.eval_data);
  }

  if (!d.examples) {
    refuse_example_flags(o, d.detected, data_path);
    const tokenizer::Tokenizer* tok = needs_tokenizer(d.detected.format) ? &tokenizer() : nullptr;
    if (o.eval_data.empty()) {
      d.tokens = train::load_token_split(data_path, tok, 0.9);
      d.held_out = "the last 10% of the file";
    } else {
      const train::DetectedFormat eval = detect("--eval-data", o.eval_data, requested);
      LORA_CHECK(!is_example_format(eval.format),
                 "--eval-data '{}' is {} ({}), but the training data is {}: give "
                 "held-out data of the same kind",
                 o.eval_data, train::data_format_name(eval.format), eval.why,
                 train::data_format_name(d.detected.format));
      const tokenizer::Tokenizer* eval_tok = needs_tokenizer(eval.format) ? &tokenizer() : nullptr;
      d.tokens.train = train::load_token_split(data_path, tok, 1.0).train;
      d.tokens.val = train::load_token_split(o.eval_data, eval_tok, 1.0).train;
      d.held_out = fmt::format("--eval-data {}", o.eval_data);
    }
    check_ids(d.tokens.train, vocab_size, fmt::format("--data '{}'", data_path));
    check_ids(d.tokens.val, vocab_size, "the held-out data");
    LORA_CHECK(int64_t(d.tokens.train.size()) > o.seq,
               "--data '{}': {} training tokens, too few for one window of "
               "--seq {} (+1)",
               data_path, d.tokens.train.size(), o.seq);
    LORA_CHECK(d.tokens.val.empty() || int64_t(d.tokens.val.size()) > o.seq,
               "the held-out data ({}) has {} tokens, too few for one window of --seq {} (+1)", d.held_out,
               d.tokens.val.size(), o.seq);
    return d;
  }

  // Examples.
  const tokenizer::Tokenizer& tok = tokenizer();
  d.chat_template = chat_template_for(o, d.detected.format);
  const chat::ChatTemplate* chat = d.chat_template ? &*d.chat_template : nullptr;
  const int64_t max_seq = o.max_seq > 0 ? o.max_seq : o.seq;
  d.train_examples = read_examples(data_path, "--data", d.detected.format, o, tok, chat, vocab_size);
  if (!o.eval_data.empty()) {
    const train::DetectedFormat eval = detect("--eval-data", o.eval_data, requested);
    LORA_CHECK(is_example_format(eval.format),
               "--eval-data '{}' is {} ({}), but the training data is examples ({}): "
               "give held-out examples",
               o.eval_data, train::data_format_name(eval.format), eval.why, train::data_format_name(d.detected.format));
    std::optional<chat::ChatTemplate> eval_chat;
    if (needs_chat_template(eval.format) && !chat) eval_chat = chat_template_for(o, eval.format);
    d.eval_examples = read_examples(o.eval_data, "--eval-data", eval.format, o, tok,
                                    chat        ? chat
                                    : eval_chat ? &*eval_chat
                                                : nullptr,
                                    vocab_size);
  }
  d.train_counts =
      train::prepare_examples(d.train_examples, max_seq, o.drop_long, fmt::format("--data '{}'", data_path));
  if (!o.eval_data.empty()) {
    d.eval_counts =
        train::prepare_examples(d.eval_examples, max_seq, o.drop_long, fmt::format("--eval-data '{}'", o.eval_data));
    d.held_out = fmt::format("--eval-data {}: {}", o.eval_data, d.eval_counts.describe());
  } else if (o.eval_fraction > 0) {
    d.eval_examples = train::split_off_examples(d.train_examples, o.eval_fraction, o.seed);
    d.held_out = fmt::format("--eval-fraction {}: {} of the {} examples (chosen by --seed)", o.eval_fraction,
                             d.eval_examples.size(), d.train_examples.size() + d.eval_examples.size());
  } else {
    d.held_out = "none (give --eval-data FILE or --eval-fraction F to measure a held-out loss)";
  }
  return d;
}

std::unique_ptr<train::BatchSource> make_training_source(const FinetuneData& data, const FinetuneOptions& o,
                                                         train::Shard shard) {
  if (!data.examples) {
    return std::make_unique<train::WindowSource>(data.tokens.train, o.batch, o.seq, o.seed, "training", shard);
  }
  train::ExampleBatching batching;
  batching.batch = o.batch;
  batching.packing = o.packing;
  batching.seq = o.seq;
  batching.seed = o.seed;
  return std::make_unique<train::ExampleSource>(data.train_examples, batching, shard);
}

int64_t steps_for_epochs(const train::BatchSource& source, double epochs, int64_t grad_accum, int64_t rows_per_batch) {
  double micro_batches = epochs * source.batches_per_epoch();
  // Packed epochs differ in rows (each epoch's order packs differently): count the rows of each epoch.
  const auto* examples = dynamic_cast<const train::ExampleSource*>(&source);
  if (examples && epochs <= 1000) {
    double rows = 0;
    const auto whole = int64_t(std::floor(epochs));
    for (int64_t e = 0; e < whole; ++e) rows += double(examples->plan(e).size());
    if (epochs > double(whole)) rows += (epochs - double(whole)) * double(examples->plan(whole).size());
    micro_batches = std::ceil(rows / double(rows_per_batch) - 1e-9);
  }
  const double steps = std::ceil(micro_batches / double(grad_accum) - 1e-9);
  LORA_CHECK(steps <= double(int64_t{1} << 40), "--epochs {}: {} steps is too many", epochs, steps);
  return std::max<int64_t>(1, int64_t(steps));
}

}  // namespace lora::tools
