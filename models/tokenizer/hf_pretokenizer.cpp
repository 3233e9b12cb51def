// PreTokenizer: ByteLevel, Split and Metaspace steps, and the five ways tokenizers splits at a delimiter.
#include "models/tokenizer/hf_pretokenizer.h"

#include <algorithm>

#include "core/error.h"
#include "models/tokenizer/byte_unicode.h"
#include "models/tokenizer/hf_json.h"

namespace lora::tokenizer::hf {

namespace {

// The regex of tokenizers' ByteLevel pre-tokenizer (use_regex: true), as it is written there.
constexpr std::string_view kByteLevelRegex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

enum class PrependScheme { kFirst, kNever, kAlways };

SplitBehavior parse_behavior(const JsonView& json) {
  const std::string b = json.string();
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  json.fail("expected one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
}

PrependScheme parse_scheme(const JsonView& json) {
  const std::string s = json.string();
  if (s == "first") return PrependScheme::kFirst;
  if (s == "never") return PrependScheme::kNever;
  if (s == "always") return PrependScheme::kAlways;
  json.fail("expected one of first, never, always");
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Splitting at matches (tokenizers' NormalizedString::split)

void split_pieces(std::string_view text, bool at_origin, const std::vector<std::pair<size_t, size_t>>& matches,
                  bool invert, SplitBehavior behavior, const PieceSink& out) {
  struct Segment {
    size_t start, end;
    bool is_match;
  };
  // The text as alternating segments that cover it (Pattern::find_matches), match flags inverted if asked.
  std::vector<Segment> segments;
  segments.reserve(2 * matches.size() + 1);
  size_t prev = 0;
  for (const auto& [start, end] : matches) {
    if (prev != start) segments.push_back({prev, start, invert});
    segments.push_back({start, end, !invert});
    prev = end;
  }
  if (prev != text.size()) segments.push_back({prev, text.size(), invert});

  // (start, end, remove)
  struct Cut {
    size_t start, end;
    bool remove;
  };
  std::vector<Cut> cuts;
  cuts.reserve(segments.size());
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Segment& s : segments) cuts.push_back({s.start, s.end, false});
      break;
    case SplitBehavior::kRemoved:
      for (const Segment& s : segments) cuts.push_back({s.start, s.end, s.is_match});
      break;
    case SplitBehavior::kContiguous: {
      bool previous_match = false;
      for (const Segment& s : segments) {
        if (s.is_match == previous_match && !cuts.empty())
          cuts.back().end = s.end;
        else
          cuts.push_back({s.start, s.end, false});
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Segment& s : segments) {
        if (s.is_match && !previous_match && !cuts.empty())
          cuts.back().end = s.end;
        else
          cuts.push_back({s.start, s.end, false});
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
        if (it->is_match && !previous_match && !cuts.empty())
          cuts.back().start = it->start;
        else
          cuts.push_back({it->start, it->end, false});
        previous_match = it->is_match;
      }
      std::reverse(cuts.begin(), cuts.end());
      break;
    }
  }
  for (const Cut& c : cuts) {
    if (c.remove || c.end == c.start) continue;
    out({text.substr(c.start, c.end - c.start), at_origin && c.start == 0});
  }
}

void split_pieces(std::string_view text, bool at_origin, const std::vector<std::pair<size_t, size_t>>& matches,
                  bool invert, SplitBehavior behavior, std::vector<Piece>& out) {
  split_pieces(text, at_origin, matches, invert, behavior, [&](const Piece& p) { out.push_back(p); });
}

namespace {

// The common case, Isolated without invert (every match and every gap is a piece), streamed from the
// matcher without collecting matches.
void split_isolated(std::string_view text, bool at_origin, const Pattern& pattern, const PieceSink& out) {
  Pattern::Matcher matcher(pattern, text);
  size_t prev = 0;
  for (size_t start, end; matcher.next(start, end);) {
    if (prev != start) out({text.substr(prev, start - prev), at_origin && prev == 0});
    out({text.substr(start, end - start), at_origin && start == 0});
    prev = end;
  }
  if (prev != text.size()) out({text.substr(prev), at_origin && prev == 0});
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Steps

struct PreTokenizer::Step {
  enum class Kind { kByteLevel, kSplit, kMetaspace } kind;
  std::shared_ptr<Pattern> pattern;  // Split: its pattern; ByteLevel with use_regex: the GPT-2 regex
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;  // ByteLevel
  std::string replacement;        // Metaspace: the character, as UTF-8
  PrependScheme scheme = PrependScheme::kAlways;
  bool split = true;  // Metaspace

  // The pieces this step makes of one piece, in order.
  void each(const Piece& piece, PieceStore& store, const PieceSink& out) const;
};

void PreTokenizer::Step::each(const Piece& piece, PieceStore& store, const PieceSink& out) const {
  std::string_view text = piece.text;
  std::vector<std::pair<size_t, size_t>> matches;
  switch (kind) {
    case Kind::kSplit:
      if (behavior == SplitBehavior::kIsolated && !invert) return split_isolated(text, piece.at_origin, *pattern, out);
      pattern->find_all(text, matches);
      return split_pieces(text, piece.at_origin, matches, invert, behavior, out);
    case Kind::kByteLevel:
      if (add_prefix_space && !text.starts_with(' ')) {
        std::string prefixed;
        prefixed.reserve(text.size() + 1);
        prefixed += ' ';
        prefixed += text;
        text = store.keep(std::move(prefixed));
      }
      if (pattern) return split_isolated(text, piece.at_origin, *pattern, out);
      if (!text.empty()) out({text, piece.at_origin});
      return;
    case Kind::kMetaspace: {
      std::string rewritten;
      rewritten.reserve(text.size() + replacement.size());
      for (const char c : text) {
        if (c == ' ')
          rewritten += replacement;
        else
          rewritten += c;
      }
      const bool starts = std::string_view(rewritten).starts_with(replacement);
      if (!starts && (scheme == PrependScheme::kAlways || (scheme == PrependScheme::kFirst && piece.at_origin)))
        rewritten.insert(0, replacement);
      const std::string_view kept = store.keep(std::move(rewritten));
      if (!split) {
        if (!kept.empty()) out({kept, piece.at_origin});
        return;
      }
      for (size_t pos = 0; (pos = kept.find(replacement, pos)) != std::string_view::npos; pos += replacement.size())
        matches.emplace_back(pos, pos + replacement.size());
      return split_pieces(kept, piece.at_origin, matches, false, SplitBehavior::kMergedWithNext, out);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// From JSON

PreTokenizer PreTokenizer::from_json(const JsonView& json) {
  PreTokenizer p;
  p.add(json);
  return p;
}

void PreTokenizer::add(const JsonView& json) {
  const std::string type = json.type();
  if (byte_level_)
    json.unsupported("a pre-tokenizer after ByteLevel (ByteLevel must be the last: it turns text into bytes)");
  auto step = std::make_shared<Step>();
  if (type == "Sequence") {
    json.only_fields({"type", "pretokenizers"});
    const JsonView list = json.field("pretokenizers");
    for (size_t i = 0; i < list.size(); ++i) add(list[i]);
    return;
  } else if (type == "ByteLevel") {
    json.only_fields({"type", "add_prefix_space", "trim_offsets", "use_regex"});
    step->kind = Step::Kind::kByteLevel;
    step->add_prefix_space = json.field("add_prefix_space").boolean();
    json.field("trim_offsets").boolean();  // offsets only: no effect on ids
    const auto use_regex = json.optional("use_regex");
    if (!use_regex || use_regex->boolean())
      step->pattern = std::make_shared<Pattern>(Pattern::regex(kByteLevelRegex, "ByteLevel pre-tokenizer regex"));
    byte_level_ = true;
  } else if (type == "Split") {
    json.only_fields({"type", "pattern", "behavior", "invert"});
    step->kind = Step::Kind::kSplit;
    step->pattern = std::make_shared<Pattern>(Pattern::from_json(json.field("pattern")));
    step->behavior = parse_behavior(json.field("behavior"));
    step->invert = json.field("invert").boolean();
  } else if (type == "Metaspace") {
    json.only_fields({"type", "replacement", "add_prefix_space", "prepend_scheme", "split", "str_rep"});
    step->kind = Step::Kind::kMetaspace;
    append_utf8(step->replacement, json.field("replacement").character());
    const auto scheme = json.optional("prepend_scheme");
    step->scheme = scheme ? parse_scheme(*scheme) : PrependScheme::kAlways;
    if (const auto add_prefix = json.optional("add_prefix_space"); add_prefix && !add_prefix->boolean()) {
      // Older files: add_prefix_space=false means never, and contradicts any other declared scheme.
      if (step->scheme != PrependScheme::kNever) add_prefix->fail("add_prefix_space does not match prepend_scheme");
    }
    const auto split = json.optional("split");
    step->split = !split || split->boolean();
    if (step->scheme == PrependScheme::kFirst) {
      metaspace_first_ = true;
      metaspace_first_after_split_ = !steps_.empty();
    }
  } else {
    json.field("type").unsupported("pre-tokenizer type (supported: ByteLevel, Split, Metaspace, Sequence)");
  }
  steps_.push_back(std::move(step));
}

void PreTokenizer::run(std::vector<Piece>& pieces, PieceStore& store, const PieceSink& sink) const {
  if (steps_.empty()) {
    for (const Piece& p : pieces) sink(p);
    return;
  }
  std::vector<Piece> next;
  for (size_t i = 0; i + 1 < steps_.size(); ++i) {
    next.clear();
    for (const Piece& p : pieces) steps_[i]->each(p, store, [&](const Piece& q) { next.push_back(q); });
    pieces.swap(next);
  }
  for (const Piece& p : pieces) steps_.back()->each(p, store, sink);
}

}  // namespace lora::tokenizer::hf
