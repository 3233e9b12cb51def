// BpeMerges: GPT-2's merge table on token ids, and the merge of one pre-token piece into token ids;
// MergeTable, the hash table under it.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace lora::tokenizer {

// MergeTable: a hash table from a pair of token ids to its merge (rank, result), for BPE encoders.
// It is an open-addressing table (linear probing, power-of-two size, at most half full): a lookup costs
// about one cache miss, where std::unordered_map chases two or three pointers. The lookups are most of
// the time of a cold-cache encode: BPE of Tiny Shakespeare's 15k distinct pieces took 48-54 ms with this
// table against 76-85 ms with std::unordered_map (same loaded machine).
class MergeTable {
 public:
  struct Merge {
    int32_t rank;
    int32_t result;
  };

  const Merge* find(int32_t left, int32_t right) const;
  // Adds (left, right) -> merge; false (and no change) when the pair is already there. Ids must be >= 0.
  bool insert(int32_t left, int32_t right, Merge merge);
  size_t size() const { return count_; }

 private:
  static uint64_t key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  bool insert_key(uint64_t key, Merge merge);

  struct Slot {
    uint64_t key;  // kEmpty when free (ids are non-negative, so no real key has the top bit set)
    Merge merge;
  };
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  std::vector<Slot> slots_ = std::vector<Slot>(1024, Slot{kEmpty, {}});
  int shift_ = 64 - 10;  // 64 - log2(slots_.size())
  size_t count_ = 0;
};

class BpeMerges {
 public:
  // byte_ids[b]: the id of the one-byte token for byte b.
  explicit BpeMerges(const std::array<int32_t, 256>& byte_ids) : byte_ids_(byte_ids) {}

  // Add the merge (left, right) -> result with priority `rank` (lower merges first). Ranks must be
  // added in increasing order. Throws lora::Error, naming `where`, when the list is not a list that
  // BPE training produces (see bpe.cpp): a repeated pair, a repeated result, or a merge that makes a
  // token an earlier merge already used.
  void add(int32_t rank, int32_t left, int32_t right, int32_t result, std::string_view where);

  // Append to `out` the token ids of one piece (raw bytes) after all merges, exactly as GPT-2's
  // encoder.py does: repeatedly merge every occurrence of the lowest-ranked adjacent pair.
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;

  size_t size() const { return table_.size(); }

 private:
  MergeTable table_;
  std::array<int32_t, 256> byte_ids_;
  // Only for add()'s checks: result id -> rank of the merge that makes it; part id -> first rank using it.
  std::unordered_map<int32_t, int32_t> made_by_rank_, first_use_rank_;
};

}  // namespace lora::tokenizer
