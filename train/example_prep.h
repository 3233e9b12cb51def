// Getting examples ready for batching: examples longer than --max-seq truncated (or, with --drop-long,
// dropped), examples left without a trained token dropped, every step counted for the report; and a
// seeded split of whole examples into training and held-out sets (--eval-fraction).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "train/example.h"

namespace lora::train {

struct PrepareCounts {
  int64_t examples = 0;           // given
  int64_t truncated = 0;          // longer than max_seq, cut to it
  int64_t dropped_long = 0;       // longer than max_seq, dropped (drop_long)
  int64_t dropped_untrained = 0;  // no trained token (left after truncation, or none at all)
  int64_t tokens_cut = 0;         // tokens removed by truncation
  int64_t kept() const { return examples - dropped_long - dropped_untrained; }
  std::string describe() const;  // "1000 examples: 12 truncated to 512 tokens (3456 tokens cut), ..."
};

// In place. A trained token is a label other than kIgnoreLabel at positions 1.. (position 0 has nothing to
// be predicted from). Throws lora::Error naming `what` when no example is left, saying why.
PrepareCounts prepare_examples(std::vector<Example>& examples, int64_t max_seq, bool drop_long,
                               const std::string& what);

// Moves round(fraction x n) examples, chosen by `seed`, into the returned held-out set (kept in file order);
// `examples` keeps the rest, in order. At least one example stays for training; a fraction that would
// hold out none of them holds out nothing.
std::vector<Example> split_off_examples(std::vector<Example>& examples, double fraction, uint64_t seed);

}  // namespace lora::train
