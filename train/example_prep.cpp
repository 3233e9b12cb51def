// Truncation, dropping and the held-out split of examples.
#include "train/example_prep.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/random.h"

namespace lora::train {
namespace {

bool has_trained_token(const Example& e) {
  return std::any_of(e.labels.begin() + std::min<ptrdiff_t>(1, ptrdiff_t(e.labels.size())), e.labels.end(),
                     [](int32_t l) { return l != kIgnoreLabel; });
}

}  // namespace

std::string PrepareCounts::describe() const {
  std::string out = fmt::format("{} examples", examples);
  if (truncated) out += fmt::format(", {} truncated ({} tokens cut)", truncated, tokens_cut);
  if (dropped_long) out += fmt::format(", {} dropped as too long (--drop-long)", dropped_long);
  if (dropped_untrained) out += fmt::format(", {} dropped without a trained token", dropped_untrained);
  if (kept() != examples) out += fmt::format(": {} kept", kept());
  return out;
}

PrepareCounts prepare_examples(std::vector<Example>& examples, int64_t max_seq, bool drop_long,
                               const std::string& what) {
  LORA_CHECK(max_seq >= 2, "--max-seq {}: an example needs at least 2 tokens to train on", max_seq);
  PrepareCounts counts;
  counts.examples = int64_t(examples.size());
  LORA_CHECK(!examples.empty(), "{}: no examples", what);
  std::vector<Example> kept;
  kept.reserve(examples.size());
  for (Example& e : examples) {
    LORA_CHECK(e.labels.size() == e.ids.size(), "{}{}: {} ids but {} labels", what,
               e.line ? fmt::format(" line {}", e.line) : "", e.ids.size(), e.labels.size());
    if (int64_t(e.ids.size()) > max_seq) {
      if (drop_long) {
        ++counts.dropped_long;
        continue;
      }
      ++counts.truncated;
      counts.tokens_cut += int64_t(e.ids.size()) - max_seq;
      e.ids.resize(size_t(max_seq));
      e.labels.resize(size_t(max_seq));
    }
    if (e.ids.size() < 2 || !has_trained_token(e)) {
      ++counts.dropped_untrained;
      continue;
    }
    kept.push_back(std::move(e));
  }
  examples = std::move(kept);
  if (examples.empty()) {
    LORA_CHECK(counts.dropped_long < counts.examples,
               "{}: every one of its {} examples is longer than --max-seq {} and --drop-long dropped them all", what,
               counts.examples, max_seq);
    LORA_FAIL(
        "{}: none of its {} examples has a trained token{} (are the labels all masked? --train-on-inputs "
        "trains on every token)",
        what, counts.examples, counts.truncated ? fmt::format(" left within --max-seq {}", max_seq) : "");
  }
  return counts;
}

std::vector<Example> split_off_examples(std::vector<Example>& examples, double fraction, uint64_t seed) {
  LORA_CHECK(fraction >= 0 && fraction < 1, "--eval-fraction {}: expected a fraction in [0, 1)", fraction);
  const size_t n = examples.size();
  size_t held = size_t(std::llround(fraction * double(n)));
  held = std::min(held, n > 0 ? n - 1 : 0);
  if (held == 0) return {};
  // A seeded choice of which examples: shuffle the indices, take the first `held`.
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t(0));
  Generator gen(splitmix64(seed) ^ 0xE7A1ull);
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[gen.below(i)]);
  std::vector<char> is_held(n, 0);
  for (size_t i = 0; i < held; ++i) is_held[order[i]] = 1;
  std::vector<Example> train, eval;
  train.reserve(n - held);
  eval.reserve(held);
  for (size_t i = 0; i < n; ++i) (is_held[i] ? eval : train).push_back(std::move(examples[i]));
  examples = std::move(train);
  return eval;
}

}  // namespace lora::train
