// BpeMerges: the merge table and the heap-based merge of a piece into GPT-2 token ids; MergeTable.
#include "models/tokenizer/bpe.h"

#include <algorithm>

#include "core/error.h"

namespace lora::tokenizer {

// Why the checks in add(): encode_piece() merges with a heap, one pair at a time (lowest rank, then
// leftmost), as tiktoken and Hugging Face do. encoder.py instead merges *all* occurrences of the lowest
// pair before it looks at the new pairs. The two agree when a pair that contains a new token always
// ranks after the merge that made that token, which holds when each token is made by one merge and
// every merge uses tokens made by earlier merges (or base tokens). BPE training produces exactly such
// lists (GPT-2's does), so add() checks it and refuses any other list instead of mis-encoding.
void BpeMerges::add(int32_t rank, int32_t left, int32_t right, int32_t result, std::string_view where) {
  // A token must be made before any merge uses it: ranks only grow, so check that `result` has not
  // been used as a part by an earlier merge.
  if (auto used = first_use_rank_.find(result); used != first_use_rank_.end())
    LORA_FAIL("{}: makes a token that the earlier merge at rank {} already uses (not a BPE merge list)", where,
              used->second);
  if (!table_.insert(left, right, MergeTable::Merge{rank, result}))
    LORA_FAIL("{}: the same pair is already merged at rank {}", where, table_.find(left, right)->rank);
  auto [made, fresh_result] = made_by_rank_.try_emplace(result, rank);
  LORA_CHECK(fresh_result, "{}: the merged token is already made by the merge at rank {}", where, made->second);
  first_use_rank_.try_emplace(left, rank);
  first_use_rank_.try_emplace(right, rank);
}

// ---------------------------------------------------------------------------------------------------
// MergeTable

const MergeTable::Merge* MergeTable::find(int32_t left, int32_t right) const {
  const uint64_t k = key(left, right);
  const size_t mask = slots_.size() - 1;
  for (size_t i = (k * 0x9E3779B97F4A7C15ull) >> shift_;; i = (i + 1) & mask) {  // Fibonacci hashing
    if (slots_[i].key == k) return &slots_[i].merge;
    if (slots_[i].key == kEmpty) return nullptr;
  }
}

bool MergeTable::insert(int32_t left, int32_t right, Merge merge) {
  return insert_key(key(left, right), merge);
}

bool MergeTable::insert_key(uint64_t k, Merge merge) {
  if (2 * (count_ + 1) > slots_.size()) {  // keep at most half full: double and re-insert
    std::vector<Slot> old(2 * slots_.size(), Slot{kEmpty, {}});
    old.swap(slots_);
    --shift_;
    count_ = 0;
    for (const Slot& s : old)
      if (s.key != kEmpty) insert_key(s.key, s.merge);
  }
  const size_t mask = slots_.size() - 1;
  size_t i = (k * 0x9E3779B97F4A7C15ull) >> shift_;
  for (; slots_[i].key != kEmpty; i = (i + 1) & mask)
    if (slots_[i].key == k) return false;
  slots_[i] = {k, merge};
  ++count_;
  return true;
}

// ---------------------------------------------------------------------------------------------------
// GPT-2's merge of one piece

void BpeMerges::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  LORA_CHECK(piece.size() < (size_t{1} << 31), "GPT-2 encode: a single piece of {} bytes is too long", piece.size());
  const auto n = static_cast<int32_t>(piece.size());
  if (n == 0) return;
  if (n == 1) {
    out.push_back(byte_ids_[static_cast<uint8_t>(piece[0])]);
    return;
  }

  // The piece as a doubly linked list of symbols, one per byte at first. A symbol is named by the
  // byte offset where it starts; merging (i, next) keeps i and unlinks next.
  struct Symbol {
    int32_t id;    // token id; -1 once merged into its left neighbour
    int32_t prev;  // offset of the previous symbol, -1 at the start
    int32_t next;  // offset of the next symbol, n at the end
  };
  std::vector<Symbol> sym(piece.size());
  for (int32_t i = 0; i < n; ++i) sym[i] = {byte_ids_[static_cast<uint8_t>(piece[i])], i - 1, i + 1};

  // Candidate merges ordered by (rank, offset): the heap pops the lowest rank, leftmost first.
  // Entries go stale when a neighbour merges; they are recognised by their ids and skipped.
  struct Candidate {
    int32_t rank, pos, left, right, result;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<Candidate> heap;
  auto push = [&](int32_t pos) {
    if (pos < 0 || sym[pos].next >= n) return;
    const int32_t next = sym[pos].next;
    if (const MergeTable::Merge* m = table_.find(sym[pos].id, sym[next].id)) {
      heap.push_back({m->rank, pos, sym[pos].id, sym[next].id, m->result});
      std::push_heap(heap.begin(), heap.end(), std::greater<>{});
    }
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>{});
    const Candidate c = heap.back();
    heap.pop_back();
    Symbol& s = sym[c.pos];
    if (s.id != c.left || s.next >= n || sym[s.next].id != c.right) continue;  // stale
    const int32_t gone = s.next;
    s.id = c.result;
    s.next = sym[gone].next;
    if (s.next < n) sym[s.next].prev = c.pos;
    sym[gone].id = -1;
    push(s.prev);  // the new pairs (prev, merged) and (merged, next)
    push(c.pos);
  }

  for (int32_t i = 0; i < n; i = sym[i].next) out.push_back(sym[i].id);
}

}  // namespace lora::tokenizer
