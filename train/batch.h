// Batch: what one forward and backward pass of training reads: token ids, the token each position must
// predict (or kIgnoreLabel), and for packed examples which example each position belongs to. Every
// BatchSource (train/batch_source.h) makes them; train_step (train/train_step.h) consumes them.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "train/example.h"

namespace lora::train {

struct Batch {
  Tensor ids;                  // [B, T] I32: the tokens the model reads
  Tensor targets;              // [B, T] I32: the token position t must predict (ids[t + 1] of the same sequence), or
                               // kIgnoreLabel where nothing is trained (a prompt, padding, a sequence's last token)
  Tensor segments;             // [B, T] I32, packed examples only: which example of its row each position belongs to
                               // (attention stays inside it, positions restart at its start); -1 on padding.
                               // Undefined: each row holds one sequence from position 0.
  int64_t trained_tokens = 0;  // positions whose target is not kIgnoreLabel: what the loss averages over
  int64_t sequences = 0;       // examples (or windows) in it: rows, or the examples packed into the rows
  int64_t padding = 0;         // positions that hold no token of any sequence

  int64_t rows() const { return ids.defined() ? ids.shape()[0] : 0; }
  int64_t positions() const { return ids.defined() ? ids.numel() : 0; }  // B x T
  // A copy on `device` (the counts travel with it).
  Batch to(Device device) const;
};

// The rows of a batch on the host, before they become tensors: one vector per row, each of length T.
struct HostBatch {
  int64_t rows = 0, seq = 0;
  std::vector<int32_t> ids, targets, segments;  // [rows * seq]; segments empty when not packed
  int64_t trained_tokens = 0, sequences = 0, padding = 0;
  Batch to_batch(Device device) const;
};

}  // namespace lora::train
