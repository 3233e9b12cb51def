// Batch: host rows to tensors, and copies between devices.
#include "train/batch.h"

#include "core/error.h"

namespace lora::train {

Batch Batch::to(Device device) const {
  Batch b = *this;
  b.ids = ids.to(device);
  b.targets = targets.to(device);
  if (segments.defined()) b.segments = segments.to(device);
  return b;
}

Batch HostBatch::to_batch(Device device) const {
  LORA_CHECK(rows > 0 && seq > 0 && ids.size() == size_t(rows * seq) && targets.size() == ids.size() &&
                 (segments.empty() || segments.size() == ids.size()),
             "a batch of {} x {} holds {} ids, {} targets and {} segment ids", rows, seq, ids.size(), targets.size(),
             segments.size());
  Batch b;
  b.ids = Tensor::from_vector(ids, {rows, seq}, device);
  b.targets = Tensor::from_vector(targets, {rows, seq}, device);
  if (!segments.empty()) b.segments = Tensor::from_vector(segments, {rows, seq}, device);
  b.trained_tokens = trained_tokens;
  b.sequences = sequences;
  b.padding = padding;
  return b;
}

}  // namespace lora::train
