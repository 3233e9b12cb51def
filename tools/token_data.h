// Token data for training and evaluation: a text file encoded with the GPT-2 tokenizer (or an llm.c .bin
// token file), split into train and held-out parts, and random [B, T] windows drawn from them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "models/tokenizer/tokenizer.h"

namespace lora::tools {

struct TokenSplit {
  std::vector<int32_t> train, val;
};

// Whether `path` is an llm.c token file (.bin) rather than text.
bool is_token_file(const std::string& path);

// Reads `path` and splits it: the first `train_fraction` of the characters (text, encoded with `tokenizer`;
// special tokens written in the text stay text) or of the tokens (an llm.c .bin, by its extension; the
// tokenizer may then be null) for training, the rest held out. Errors name the file.
TokenSplit load_token_split(const std::string& path, const tokenizer::Tokenizer* tokenizer,
                            double train_fraction = 0.9);

// Reads an llm.c token file: a 256 x int32 header (magic 20240520, version, token count), then the tokens:
// uint16 for version 1 (GPT-2), uint32 for version 2 (llm.c's LLaMA-3 files).
std::vector<int32_t> read_llmc_tokens(const std::string& path);

// Random windows: inputs [B, T] and targets [B, T] (the inputs shifted by one), seeded.
class BatchSampler {
 public:
  BatchSampler(const std::vector<int32_t>& tokens, int64_t batch, int64_t seq, uint64_t seed, const std::string& what);
  void next(Tensor& inputs, Tensor& targets, Device device = Device::cpu()) { next_shard(inputs, targets, device, 0, 1); }
  // Data parallelism: draws a global batch of `shards` x batch windows and returns rows
  // [shard x batch, (shard + 1) x batch) of it, so that N ranks with batch b see exactly the windows one
  // process with batch N b sees, and every rank's generator stays in step.
  void next_shard(Tensor& inputs, Tensor& targets, Device device, int shard, int shards);
  // The generator's state: what the next windows depend on (for resumable checkpoints).
  GeneratorState state() const { return gen_.state(); }
  void set_state(const GeneratorState& state) { gen_.set_state(state); }

 private:
  const std::vector<int32_t>& tokens_;
  int64_t batch_, seq_;
  Generator gen_;
};

}  // namespace lora::tools
