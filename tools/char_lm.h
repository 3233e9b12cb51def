// What the character-level examples share (train_char_gpt, lora_char_gpt): a vocabulary of one token per
// character, text split into training and held-out ids, a held-out loss, and samples longer than the context.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "models/causal_lm.h"
#include "models/generate.h"

namespace lora::tools {

// One token per distinct byte of a text, in byte order: id i is the i-th smallest byte present. Tiny
// Shakespeare gives 65 tokens: '\n' is 0, ' ' is 1, ..., 'z' is 64. Saved beside a model as JSON:
// {"type": "char", "chars": "\n !$&',-.3:;?ABC..."} (the string's i-th character is token i).
class CharVocab {
 public:
  static CharVocab from_text(const std::string& text);
  // Reads what save() wrote; errors name the file.
  static CharVocab load(const std::string& path);
  void save(const std::string& path) const;  // atomically (core/atomic_file.h)

  int64_t size() const { return static_cast<int64_t>(chars_.size()); }
  const std::string& chars() const { return chars_; }
  bool contains(char c) const { return id_of_[static_cast<unsigned char>(c)] >= 0; }
  // The ids of `text`. Refuses a character outside the vocabulary, naming it, how often it occurs and
  // `what` the text is ("--data 'x.txt'").
  std::vector<int32_t> encode(const std::string& text, const std::string& what = "text") const;
  std::string decode(const std::vector<int32_t>& ids) const;  // refuses an id outside [0, size)

 private:
  explicit CharVocab(std::string chars);
  std::string chars_;
  std::array<int32_t, 256> id_of_{};  // -1 for bytes outside the vocabulary
};

// The first `train_fraction` of the ids for training, the rest held out (nanoGPT's convention: 0.9).
struct CharSplit {
  std::vector<int32_t> train, val;
};
CharSplit split_ids(const std::vector<int32_t>& ids, double train_fraction = 0.9);

// Mean next-character loss (nats) over `batches` windows [batch, seq] of `ids`, drawn from `seed`: the same
// windows at every call, so figures taken at different times compare. Eval mode, no tape; the model's mode
// is restored.
double held_out_loss(models::CausalLM& model, const std::vector<int32_t>& ids, int64_t batch, int64_t seq,
                     int64_t batches, uint64_t seed);

// `length` characters continuing `prompt`, sampled with `options` (temperature, top-k, seed; max_new_tokens
// and stop tokens are set here). A model sees at most its context: past it, each round starts a fresh KV
// cache primed with the last half-context of text, so samples can be longer than the context.
std::string sample_text(models::CausalLM& model, const CharVocab& vocab, const std::string& prompt, int64_t length,
                        models::SamplingOptions options);

// Entropy (nats) of the characters' frequencies in `ids`: the loss of the best model that ignores context.
double unigram_entropy(const std::vector<int32_t>& ids, int64_t vocab_size);

}  // namespace lora::tools
