// BatchSource: where training batches come from. Raw text and llm.c token files give random windows of a
// token stream (train/window_source.h); datasets of examples give padded or packed batches of whole
// examples, shuffled each epoch (train/example_source.h). The Trainer asks for micro-batches and keeps the
// source's position in its checkpoints, so a resumed run reads exactly the batches an uninterrupted one would.
//
// Data parallelism: a source is built for one shard (rank r of R). Each global batch is R x batch
// sequences; rank r gets its r-th part, so R ranks with batch b read what one process with batch R b
// reads, and every rank's position stays equal.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "train/batch.h"

namespace lora::train {

// Which part of each global batch this process reads.
struct Shard {
  int index = 0, count = 1;
};

class BatchSource {
 public:
  virtual ~BatchSource() = default;

  // The next micro-batch of this shard, on `device`.
  virtual Batch next(Device device) = 0;

  // Epochs done: sequences (or tokens) read so far over those in one pass of the data.
  virtual double epoch() const = 0;
  // Micro-batches (of this shard) that make one epoch.
  virtual double batches_per_epoch() const = 0;

  // Everything the next batches depend on, as JSON for checkpoints; set_state restores it and refuses
  // (lora::Error) a state that does not fit this source's data and settings.
  virtual nlohmann::json state() const = 0;
  virtual void set_state(const nlohmann::json& state) = 0;

  // One line for the terminal: what it reads and how it batches.
  virtual std::string describe() const = 0;
};

}  // namespace lora::train
