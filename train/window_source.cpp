// WindowSource: random windows of a token stream.
#include "train/window_source.h"

#include "core/error.h"
#include "train/generator_json.h"

namespace lora::train {

TokenSplit split_tokens(std::vector<int32_t> tokens, double train_fraction) {
  LORA_CHECK(train_fraction > 0 && train_fraction <= 1, "train fraction {} is outside (0, 1]", train_fraction);
  TokenSplit split;
  const size_t cut = size_t(double(tokens.size()) * train_fraction);
  split.val.assign(tokens.begin() + std::ptrdiff_t(cut), tokens.end());
  tokens.resize(cut);
  split.train = std::move(tokens);
  return split;
}

WindowSource::WindowSource(const std::vector<int32_t>& tokens, int64_t batch, int64_t seq, uint64_t seed,
                           const std::string& what, Shard shard)
    : tokens_(tokens), batch_(batch), seq_(seq), shard_(shard), gen_(seed) {
  LORA_CHECK(batch > 0 && seq > 0, "batch {} and sequence length {} must be positive", batch, seq);
  LORA_CHECK(shard.count >= 1 && shard.index >= 0 && shard.index < shard.count, "window source: shard {} of {}",
             shard.index, shard.count);
  LORA_CHECK(int64_t(tokens.size()) > seq, "the {} data has {} tokens, too few for windows of {} + 1 tokens", what,
             tokens.size(), seq);
}

HostBatch WindowSource::next_host() {
  HostBatch b;
  b.rows = batch_;
  b.seq = seq_;
  b.ids.resize(size_t(batch_ * seq_));
  b.targets.resize(b.ids.size());
  const uint64_t starts = tokens_.size() - size_t(seq_);
  for (int64_t w = 0; w < batch_ * shard_.count; ++w) {
    const size_t start = gen_.below(starts);  // every shard draws every window: the generators stay equal
    const int64_t row = w - int64_t(shard_.index) * batch_;
    if (row < 0 || row >= batch_) continue;
    for (int64_t t = 0; t < seq_; ++t) {
      b.ids[size_t(row * seq_ + t)] = tokens_[start + size_t(t)];
      b.targets[size_t(row * seq_ + t)] = tokens_[start + size_t(t) + 1];
    }
  }
  windows_drawn_ += batch_ * shard_.count;
  b.trained_tokens = batch_ * seq_;
  b.sequences = batch_;
  return b;
}

Batch WindowSource::next(Device device) {
  return next_host().to_batch(device);
}

double WindowSource::epoch() const {
  return double(windows_drawn_) * double(seq_) / double(tokens_.size());
}

double WindowSource::batches_per_epoch() const {
  return double(tokens_.size()) / double(batch_ * shard_.count * seq_);
}

nlohmann::json WindowSource::state() const {
  return {{"kind", "windows"}, {"generator", generator_to_json(gen_.state())}, {"windows_drawn", windows_drawn_}};
}

void WindowSource::set_state(const nlohmann::json& state) {
  LORA_CHECK(state.is_object() && state.value("kind", "") == "windows",
             "the data position {} is not that of random windows (another kind of data?)", state.dump().substr(0, 200));
  gen_.set_state(generator_from_json(state.at("generator")));
  windows_drawn_ = state.at("windows_drawn").get<int64_t>();
  LORA_CHECK(windows_drawn_ >= 0, "the data position holds {} windows drawn", windows_drawn_);
}

std::string WindowSource::describe() const {
  return fmt::format("random windows of {} tokens from {} tokens, batch {}{}", seq_, tokens_.size(), batch_,
                     shard_.count > 1 ? fmt::format(" per rank ({} ranks)", shard_.count) : "");
}

}  // namespace lora::train
