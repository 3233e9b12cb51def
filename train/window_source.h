// WindowSource: batches of random windows of one long token stream (raw text, llm.c token files): inputs
// [B, T] and targets [B, T], the same window shifted by one token, every position trained (nanoGPT's and
// llm.c's way of training on a corpus). Seeded; its generator is its resumable state.
#pragma once

#include <string>
#include <vector>

#include "core/random.h"
#include "train/batch_source.h"

namespace lora::train {

// A stream of tokens split into a training part and a held-out part.
struct TokenSplit {
  std::vector<int32_t> train, val;
};

// The first `train_fraction` of `tokens` for training, the rest held out.
TokenSplit split_tokens(std::vector<int32_t> tokens, double train_fraction);

class WindowSource : public BatchSource {
 public:
  // `tokens` must outlive the source. `what` names the data in errors ("training", "held-out").
  WindowSource(const std::vector<int32_t>& tokens, int64_t batch, int64_t seq, uint64_t seed, const std::string& what,
               Shard shard = {});

  // Draws a global batch of shard.count x batch windows and returns this shard's rows of it, so every
  // shard's generator stays in step.
  Batch next(Device device) override;
  double epoch() const override;
  double batches_per_epoch() const override;
  nlohmann::json state() const override;
  void set_state(const nlohmann::json& state) override;
  std::string describe() const override;

  // The same draw as a host batch (the evaluation sets keep these).
  HostBatch next_host();

 private:
  const std::vector<int32_t>& tokens_;
  int64_t batch_, seq_;
  Shard shard_;
  Generator gen_;
  int64_t windows_drawn_ = 0;  // over all shards, for the epoch count
};

}  // namespace lora::train
