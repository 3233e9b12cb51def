// PreTokenizer: the tokenizer.json "pre_tokenizer" (ByteLevel, Split, Metaspace, Sequence).
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "models/tokenizer/hf_regex.h"

namespace lora::tokenizer::hf {

class JsonView;

// A piece of text on its way to the model. at_origin: the piece starts at offset 0 of the original text
// (what Metaspace's prepend_scheme "first" asks).
struct Piece {
  std::string_view text;
  bool at_origin;
};

// Owns the text of pieces that a step rewrote (the others view into the caller's text).
class PieceStore {
 public:
  std::string_view keep(std::string text) { return owned_.emplace_back(std::move(text)); }
  void clear() { owned_.clear(); }

 private:
  std::deque<std::string> owned_;  // a deque: adding never moves the strings that views point into
};

// tokenizers' SplitDelimiterBehavior.
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Receives the pieces of a step in order.
using PieceSink = std::function<void(const Piece&)>;

// Splits `text` at the matches of a pattern as tokenizers' NormalizedString::split does. `matches` are
// the pattern's non-overlapping matches in order; with `invert`, the text between them is the delimiter.
// Gives the non-empty pieces to `out` in order; the first inherits `at_origin`.
void split_pieces(std::string_view text, bool at_origin, const std::vector<std::pair<size_t, size_t>>& matches,
                  bool invert, SplitBehavior behavior, const PieceSink& out);
void split_pieces(std::string_view text, bool at_origin, const std::vector<std::pair<size_t, size_t>>& matches,
                  bool invert, SplitBehavior behavior, std::vector<Piece>& out);

class PreTokenizer {
 public:
  // From the JSON (a Sequence becomes its flattened steps). Refuses unsupported types and options, and a
  // ByteLevel step anywhere but last.
  static PreTokenizer from_json(const JsonView& json);
  PreTokenizer() = default;  // no pre-tokenizer: the whole piece goes to the model

  // Runs `pieces` through every step and gives the final pieces to `sink` in order (the last step
  // streams them: a large text is never held as a list of pieces). Rewritten text is kept in `store`.
  void run(std::vector<Piece>& pieces, PieceStore& store, const PieceSink& sink) const;

  // The last step is ByteLevel: pieces reach the model as raw bytes, each standing for the vocabulary
  // character of GPT-2's bytes_to_unicode table (the model maps them; see BpeModel).
  bool byte_level() const { return byte_level_; }
  // A Metaspace step with prepend_scheme "first", and whether another step comes before it.
  bool metaspace_first() const { return metaspace_first_; }
  bool metaspace_first_after_split() const { return metaspace_first_after_split_; }

 private:
  struct Step;
  void add(const JsonView& json);
  std::vector<std::shared_ptr<const Step>> steps_;
  bool byte_level_ = false;
  bool metaspace_first_ = false;
  bool metaspace_first_after_split_ = false;
};

}  // namespace lora::tokenizer::hf
