// Character vocabulary, held-out loss and long samples for the character-level examples.
#include "tools/char_lm.h"
#include "core/json.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>

#include "autograd/grad_mode.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/files.h"
#include "train/window_source.h"

namespace lora::tools {

namespace {

// A byte as a reader would write it: 'a', '\n', '\x93'.
std::string show_byte(unsigned char c) {
  if (c == '\n') return "'\\n'";
  if (c == '\t') return "'\\t'";
  if (c >= 0x20 && c < 0x7f) return fmt::format("'{}'", static_cast<char>(c));
  return fmt::format("'\\x{:02x}'", c);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// CharVocab

CharVocab::CharVocab(std::string chars) : chars_(std::move(chars)) {
  id_of_.fill(-1);
  for (size_t i = 0; i < chars_.size(); ++i) {
    const auto c = static_cast<unsigned char>(chars_[i]);
    LORA_CHECK(id_of_[c] < 0, "character vocabulary: {} appears twice", show_byte(c));
    id_of_[c] = static_cast<int32_t>(i);
  }
}

CharVocab CharVocab::from_text(const std::string& text) {
  std::array<bool, 256> seen{};
  for (char c : text) seen[static_cast<unsigned char>(c)] = true;
  std::string chars;
  for (int c = 0; c < 256; ++c) {
    if (seen[c]) chars.push_back(static_cast<char>(c));
  }
  LORA_CHECK(!chars.empty(), "character vocabulary: the text is empty");
  return CharVocab(std::move(chars));
}

CharVocab CharVocab::load(const std::string& path) {
  const std::string text = read_file(path, "character vocabulary", uint64_t(1) << 20);
  const nlohmann::json j = parse_json(text, fmt::format("character vocabulary '{}'", path));
  LORA_CHECK(j.is_object() && j.value("type", "") == "char" && j.contains("chars") && j["chars"].is_string(),
             "character vocabulary '{}': expected {{\"type\": \"char\", \"chars\": \"...\"}}", path);
  const std::string chars = j["chars"].get<std::string>();
  LORA_CHECK(!chars.empty() && chars.size() <= 256, "character vocabulary '{}': {} characters (expected 1 to 256)",
             path, chars.size());
  try {
    return CharVocab(chars);
  } catch (const Error& e) {
    LORA_FAIL("'{}': {}", path, e.what());
  }
}

void CharVocab::save(const std::string& path) const {
  // Bytes above 0x7f are not UTF-8 on their own: nlohmann's dump() would refuse them, so they are not
  // supported here (every text of the ladder is ASCII).
  for (char c : chars_) {
    LORA_CHECK(static_cast<unsigned char>(c) < 0x80,
               "character vocabulary: {} is not ASCII; only ASCII texts are "
               "supported",
               show_byte(static_cast<unsigned char>(c)));
  }
  const nlohmann::json j = {{"type", "char"}, {"chars", chars_}};
  write_file_atomically(path, [&](std::ostream& out) { out << j.dump() << "\n"; });
}

std::vector<int32_t> CharVocab::encode(const std::string& text, const std::string& what) const {
  std::vector<int32_t> ids(text.size());
  std::array<int64_t, 256> unknown{};
  int64_t unknown_total = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    ids[i] = id_of_[c];
    if (ids[i] < 0) ++unknown[c], ++unknown_total;
  }
  if (unknown_total > 0) {
    std::string list;
    int listed = 0;
    for (int c = 0; c < 256 && listed < 8; ++c) {
      if (unknown[c] == 0) continue;
      list += fmt::format("{}{} ({}x)", listed++ ? ", " : "", show_byte(static_cast<unsigned char>(c)), unknown[c]);
    }
    LORA_FAIL("{}: {} characters are not in the model's vocabulary of {}: {}{}", what, unknown_total, size(), list,
              listed == 8 ? ", ..." : "");
  }
  return ids;
}

std::string CharVocab::decode(const std::vector<int32_t>& ids) const {
  std::string text(ids.size(), '\0');
  for (size_t i = 0; i < ids.size(); ++i) {
    LORA_CHECK(ids[i] >= 0 && ids[i] < size(), "character vocabulary: id {} is outside [0, {})", ids[i], size());
    text[i] = chars_[static_cast<size_t>(ids[i])];
  }
  return text;
}

// ---------------------------------------------------------------------------------------------------
// Data, loss, samples

CharSplit split_ids(const std::vector<int32_t>& ids, double train_fraction) {
  LORA_CHECK(train_fraction > 0 && train_fraction < 1, "train fraction {} is outside (0, 1)", train_fraction);
  const auto cut = static_cast<size_t>(static_cast<double>(ids.size()) * train_fraction);
  return {std::vector<int32_t>(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(cut)),
          std::vector<int32_t>(ids.begin() + static_cast<std::ptrdiff_t>(cut), ids.end())};
}

double held_out_loss(models::CausalLM& model, const std::vector<int32_t>& ids, int64_t batch, int64_t seq,
                     int64_t batches, uint64_t seed) {
  LORA_CHECK(batches > 0, "held-out loss: {} batches", batches);
  NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  train::WindowSource windows(ids, batch, seq, seed, "held-out");
  double total = 0;
  for (int64_t i = 0; i < batches; ++i) {
    const train::Batch b = windows.next(model.device());
    total += model.loss(b.ids, b.targets).item();
  }
  model.train(was_training);
  return total / static_cast<double>(batches);
}

std::string sample_text(models::CausalLM& model, const CharVocab& vocab, const std::string& prompt, int64_t length,
                        models::SamplingOptions options) {
  LORA_CHECK(!prompt.empty(), "sample: the prompt is empty (give at least one character)");
  const int64_t context = model.dims().context_length;
  const int64_t keep = std::max<int64_t>(1, context / 2);  // characters carried into each new round
  std::vector<int32_t> text = vocab.encode(prompt, "the prompt");
  const size_t prompt_size = text.size();
  options.stop_at_eos = false;  // a character model has no end-of-text token
  const uint64_t seed = options.seed;
  for (uint64_t round = 0; static_cast<int64_t>(text.size() - prompt_size) < length; ++round) {
    const size_t start = text.size() > static_cast<size_t>(keep) ? text.size() - static_cast<size_t>(keep) : 0;
    const std::vector<int32_t> window(text.begin() + static_cast<std::ptrdiff_t>(start), text.end());
    const int64_t remaining = length - static_cast<int64_t>(text.size() - prompt_size);
    options.max_new_tokens = std::min<int64_t>(remaining, context - static_cast<int64_t>(window.size()));
    options.seed = seed + round;  // each round its own draws
    const std::vector<int32_t> more = models::generate(model, window, options);
    if (more.empty()) break;
    text.insert(text.end(), more.begin(), more.end());
  }
  return vocab.decode(std::vector<int32_t>(text.begin() + static_cast<std::ptrdiff_t>(prompt_size), text.end()));
}

double unigram_entropy(const std::vector<int32_t>& ids, int64_t vocab_size) {
  std::vector<double> counts(static_cast<size_t>(vocab_size), 0.0);
  for (int32_t id : ids) counts[static_cast<size_t>(id)] += 1.0;
  double h = 0;  // H = -sum_c p_c ln p_c
  for (double n : counts) {
    if (n > 0) h -= n / static_cast<double>(ids.size()) * std::log(n / static_cast<double>(ids.size()));
  }
  return h;
}

}  // namespace lora::tools
