// ExampleSource: the epoch's order and rows, and the rows made into batches.
#include "train/example_source.h"

#include <algorithm>
#include <deque>
#include <numeric>

#include "core/error.h"
#include "core/random.h"

namespace lora::train {
namespace {

// How many rows stay open for later examples while packing: a wider window fills rows better (less
// padding) and strays further from the shuffled order.
constexpr size_t kOpenRows = 32;

// Appends example `e` to row `r` of a host batch whose rows are `seq` long, starting at column `start`:
// position t reads ids[t] and predicts labels[t + 1]; the last position predicts nothing.
void place(const Example& e, HostBatch& b, int64_t r, int64_t start, int32_t segment) {
  const size_t n = e.ids.size();
  const size_t base = size_t(r * b.seq + start);
  for (size_t t = 0; t < n; ++t) {
    b.ids[base + t] = e.ids[t];
    const int32_t target = t + 1 < n ? e.labels[t + 1] : kIgnoreLabel;
    b.targets[base + t] = target;
    b.trained_tokens += target != kIgnoreLabel;
    if (!b.segments.empty()) b.segments[base + t] = segment;
  }
  ++b.sequences;
}

// Builds the host batch of `rows` (lists of example indices), as long as the longest row.
HostBatch make_batch(const std::vector<Example>& examples, const std::vector<std::vector<int32_t>>& rows, bool packed,
                     int32_t pad_id) {
  HostBatch b;
  b.rows = int64_t(rows.size());
  for (const auto& row : rows) {
    int64_t length = 0;
    for (int32_t i : row) length += int64_t(examples[size_t(i)].ids.size());
    b.seq = std::max(b.seq, length);
  }
  b.ids.assign(size_t(b.rows * b.seq), pad_id);
  b.targets.assign(b.ids.size(), kIgnoreLabel);
  if (packed) b.segments.assign(b.ids.size(), 0);
  for (int64_t r = 0; r < b.rows; ++r) {
    int64_t column = 0;
    int32_t segment = 0;
    for (int32_t i : rows[size_t(r)]) {
      place(examples[size_t(i)], b, r, column, segment++);
      column += int64_t(examples[size_t(i)].ids.size());
    }
    b.padding += b.seq - column;
    // Padding gets a segment of its own: nothing of the row's examples attends to it, nor it to them.
    if (packed) std::fill(b.segments.begin() + r * b.seq + column, b.segments.begin() + (r + 1) * b.seq, segment);
  }
  return b;
}

}  // namespace

ExampleSource::ExampleSource(const std::vector<Example>& examples, ExampleBatching batching, Shard shard)
    : examples_(examples), o_(batching), shard_(shard) {
  LORA_CHECK(!examples.empty(), "no examples to batch");
  LORA_CHECK(o_.batch > 0, "batch {} must be positive", o_.batch);
  LORA_CHECK(shard.count >= 1 && shard.index >= 0 && shard.index < shard.count, "example source: shard {} of {}",
             shard.index, shard.count);
  LORA_CHECK(examples.size() < size_t(INT32_MAX), "{} examples: too many", examples.size());
  for (const Example& e : examples) {
    LORA_CHECK(e.ids.size() >= 2 && e.labels.size() == e.ids.size(),
               "example{}: {} ids and {} labels (expected at least 2 ids and one label per id)",
               e.line ? fmt::format(" of line {}", e.line) : "", e.ids.size(), e.labels.size());
    LORA_CHECK(!o_.packing || int64_t(e.ids.size()) <= o_.seq, "example{}: {} tokens do not fit a packed row of {}",
               e.line ? fmt::format(" of line {}", e.line) : "", e.ids.size(), o_.seq);
  }
  start_epoch(0);
}

std::vector<std::vector<int32_t>> ExampleSource::plan(int64_t epoch) const {
  std::vector<int32_t> order(examples_.size());
  std::iota(order.begin(), order.end(), 0);
  if (o_.shuffle) {
    // Fisher-Yates from a generator seeded by (seed, epoch): any epoch's order without the ones before it.
    Generator gen(splitmix64(o_.seed) ^ splitmix64(uint64_t(epoch) + 0x5EED));
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[gen.below(i)]);
  }
  std::vector<std::vector<int32_t>> rows;
  if (!o_.packing) {
    rows.reserve(order.size());
    for (int32_t i : order) rows.push_back({i});
    return rows;
  }
  // First fit over the open rows (the newest kOpenRows): each example goes into the first open row with
  // room for it, or opens a new one.
  std::vector<int64_t> used;  // tokens in each row
  std::deque<size_t> open;    // indices of the open rows, oldest first
  for (int32_t i : order) {
    const int64_t n = int64_t(examples_[size_t(i)].ids.size());
    auto fit = std::find_if(open.begin(), open.end(), [&](size_t r) { return used[r] + n <= o_.seq; });
    if (fit == open.end()) {
      rows.emplace_back();
      used.push_back(0);
      open.push_back(rows.size() - 1);
      if (open.size() > kOpenRows) open.pop_front();
      fit = open.end() - 1;
    }
    rows[*fit].push_back(i);
    used[*fit] += n;
    if (used[*fit] == o_.seq) open.erase(fit);
  }
  return rows;
}

void ExampleSource::start_epoch(int64_t epoch) {
  epoch_ = epoch;
  row_ = 0;
  rows_ = plan(epoch);
}

HostBatch ExampleSource::next_host() {
  // The global batch is shard.count x batch rows of the stream; this shard builds its own part.
  std::vector<std::vector<int32_t>> mine;
  const int64_t first = o_.batch * shard_.index;
  for (int64_t k = 0; k < o_.batch * shard_.count; ++k) {
    if (row_ == int64_t(rows_.size())) start_epoch(epoch_ + 1);
    if (k >= first && k < first + o_.batch) mine.push_back(rows_[size_t(row_)]);
    ++row_;
  }
  return make_batch(examples_, mine, o_.packing, o_.pad_id);
}

Batch ExampleSource::next(Device device) {
  return next_host().to_batch(device);
}

double ExampleSource::epoch() const {
  return double(epoch_) + double(row_) / double(rows_.size());
}

double ExampleSource::batches_per_epoch() const {
  return double(rows_.size()) / double(o_.batch * shard_.count);
}

nlohmann::json ExampleSource::state() const {
  return {{"kind", "examples"}, {"examples", examples_.size()}, {"epoch", epoch_}, {"row", row_}};
}

void ExampleSource::set_state(const nlohmann::json& state) {
  LORA_CHECK(state.is_object() && state.value("kind", "") == "examples",
             "the data position {} is not that of a dataset of examples (another kind of data?)",
             state.dump().substr(0, 200));
  int64_t count = 0, epoch = 0, row = 0;
  try {
    count = state.at("examples").get<int64_t>();
    epoch = state.at("epoch").get<int64_t>();
    row = state.at("row").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    LORA_FAIL("the data position is malformed ({})", e.what());
  }
  LORA_CHECK(count == int64_t(examples_.size()), "the data position is that of {} examples, this data has {}", count,
             examples_.size());
  LORA_CHECK(epoch >= 0, "the data position holds epoch {}", epoch);
  start_epoch(epoch);
  LORA_CHECK(row >= 0 && row <= int64_t(rows_.size()), "the data position holds row {} of an epoch of {} rows", row,
             rows_.size());
  row_ = row;
}

std::string ExampleSource::describe() const {
  return fmt::format("{} examples, {}, batch {}{}, {}", examples_.size(),
                     o_.packing ? fmt::format("packed into rows of {} tokens ({} rows an epoch)", o_.seq, rows_.size())
                                : "padded to the longest in each batch",
                     o_.batch, shard_.count > 1 ? fmt::format(" per rank ({} ranks)", shard_.count) : "",
                     o_.shuffle ? "shuffled every epoch" : "in order");
}

std::vector<HostBatch> batch_in_order(const std::vector<Example>& examples, int64_t batch) {
  LORA_CHECK(batch > 0, "batch {} must be positive", batch);
  std::vector<HostBatch> out;
  for (size_t start = 0; start < examples.size(); start += size_t(batch)) {
    std::vector<std::vector<int32_t>> rows;
    for (size_t i = start; i < std::min(examples.size(), start + size_t(batch)); ++i) rows.push_back({int32_t(i)});
    out.push_back(make_batch(examples, rows, false, 0));
  }
  return out;
}

}  // namespace lora::train
