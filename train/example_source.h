// ExampleSource: batches of whole examples (train/example.h), in a seeded order reshuffled every epoch.
//
//   padding (the default): each row holds one example; a batch is as long as its longest row and the rest
//     of the shorter rows is padding (ignored by the loss; right-padding cannot change the causal attention
//     of the tokens before it).
//   packing: examples are packed into rows of `seq` tokens (first fit over a window of open rows, in the
//     epoch's order); each row carries segment ids so that attention stays inside each example and
//     positions restart at its first token, which makes a packed batch train exactly like its examples one
//     by one, with almost no padding.
//
// An example of L tokens gives L positions: position t reads ids[t] and must predict labels[t + 1] (its
// last token predicts nothing). The stream of rows runs on from one epoch into the next, so a step can
// straddle two epochs; the position (epoch, row) is the resumable state.
#pragma once

#include <string>
#include <vector>

#include "train/batch_source.h"

namespace lora::train {

struct ExampleBatching {
  int64_t batch = 1;  // rows per micro-batch (per shard)
  bool packing = false;
  int64_t seq = 0;      // packing: tokens per row (every example must fit)
  uint64_t seed = 0;    // the shuffle's
  bool shuffle = true;  // false: the examples' own order every epoch (evaluation)
  int32_t pad_id = 0;   // the id written into padding (never read: its targets are ignored)
};

class ExampleSource : public BatchSource {
 public:
  // `examples` must outlive the source; each needs at least 2 tokens and as many labels as ids
  // (prepare_examples in train/example_prep.h sees to it).
  ExampleSource(const std::vector<Example>& examples, ExampleBatching batching, Shard shard = {});

  Batch next(Device device) override;
  HostBatch next_host();
  double epoch() const override;
  double batches_per_epoch() const override;
  nlohmann::json state() const override;
  void set_state(const nlohmann::json& state) override;
  std::string describe() const override;

  // The rows of epoch `epoch`, each a list of example indices (one per row without packing).
  std::vector<std::vector<int32_t>> plan(int64_t epoch) const;

 private:
  void start_epoch(int64_t epoch);

  const std::vector<Example>& examples_;
  ExampleBatching o_;
  Shard shard_;
  int64_t epoch_ = 0, row_ = 0;             // the next row: row_ of epoch_'s plan
  std::vector<std::vector<int32_t>> rows_;  // epoch_'s plan
};

// Every example in order, in batches of `batch` rows (padding), for held-out losses.
std::vector<HostBatch> batch_in_order(const std::vector<Example>& examples, int64_t batch);

}  // namespace lora::train
